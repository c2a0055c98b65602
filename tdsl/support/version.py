"""The package version, in a module any layer may import (`tdsl.__version__` re-exports it;
importing `tdsl` itself from below would load the facade)."""

__version__ = "0.1.0"
