"""Instruction and preference data: formats, validation, chat templates."""
