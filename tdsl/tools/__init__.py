"""Command-line drivers: tdsl-opt (pass driver) and tdsl (compile/run/...)."""
