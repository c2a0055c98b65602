"""The precision verbs (`tdsl.quantize`, `tdsl.qat`) and pipelines, where users found them;
they live in `tdsl.model.precision` and `tdsl.passes.pipelines`."""
from tdsl.model.precision import (
    PIPELINE_ALL,
    POLICIES,
    PRECISIONS,
    THRESHOLDS,
    calibrate_thresholds,
    expand_override,
    pipeline_for,
    qat,
    quantize,
    quantize_all,
    summary_table,
    threshold_options,
)

__all__ = ["PIPELINE_ALL", "POLICIES", "PRECISIONS", "THRESHOLDS", "calibrate_thresholds", "expand_override",
           "pipeline_for", "qat", "quantize", "quantize_all", "summary_table", "threshold_options"]
