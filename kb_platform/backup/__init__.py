"""Backups of what holds state."""
