"""make bench: each part measured against the real tool in the same run."""
