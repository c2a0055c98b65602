"""Pass registry: every pass is an xDSL ModulePass registered here by its flag name."""
