"""The rule engine (YAML rules before and after the model) and the human-review queue."""
