"""domaintune: from an open base LLM to a governed enterprise domain model, from one YAML file."""

__version__ = "0.1.0"
