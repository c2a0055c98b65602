"""The model zoo: DSL sources shipped as package data, found by name."""
