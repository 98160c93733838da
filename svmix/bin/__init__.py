"""Console-script entry points: thin click wrappers over the importable API."""
