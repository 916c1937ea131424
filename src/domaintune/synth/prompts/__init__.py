"""Versioned prompt templates of the synth stage (templates.yaml), loaded as data."""
