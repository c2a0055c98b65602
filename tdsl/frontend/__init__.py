"""Frontend: lark grammar -> AST with locations -> IR generation (elaboration)."""
