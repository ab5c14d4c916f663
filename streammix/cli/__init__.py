"""Command-line entry points: argument parsing and calls into the package, nothing more."""
