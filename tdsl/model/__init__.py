"""What users hold: a compiled program (`compiled`), its frozen form (`frozen`), a deployment
(`deploy`), reports on it (`reports`) and the precision verbs that make them (`precision`).

Above the backends and below `package/`: a backend takes a module and weights and never
imports this folder (tests/unit/test_layering.py enforces it).
"""
