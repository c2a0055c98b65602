"""`tdsl.deploy`, where users found it; it lives in `tdsl.model.deploy`."""
from tdsl.model.deploy import BACKENDS, Deployment, deploy, program_and_weights

__all__ = ["BACKENDS", "Deployment", "deploy", "program_and_weights"]
