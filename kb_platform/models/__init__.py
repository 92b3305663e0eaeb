"""Model artifacts: where each model's files come from and how they are loaded (one registry)."""
