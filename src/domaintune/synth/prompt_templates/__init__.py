"""Versioned prompt templates of the synth stage (templates.yaml, EN + ZH), read by synth/prompts.py."""
