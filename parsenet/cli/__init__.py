"""Command-line entry points (thin Hydra wrappers around the library)."""
