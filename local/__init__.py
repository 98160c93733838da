"""Corpus-specific data preparation (run as scripts: python local/<name>.py --help)."""
