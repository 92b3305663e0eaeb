"""Retrieval evaluation: ranking metrics and test collections with judgments."""
