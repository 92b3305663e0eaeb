"""Data-quality expectations (great-expectations) shared by asset checks and reports."""
