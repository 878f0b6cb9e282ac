"""The package version, in a module of its own so that library modules can record it (in
checkpoints) without importing the package `__init__` (which lazily imports the API)."""

__version__ = "0.1.0"
