"""Speech to text for audio documents."""
