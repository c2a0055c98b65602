"""xDSL dialects: `tdsl` (network level) and `tern` (ternary / packed level)."""
