"""Accuracy evaluation of any disparity method (network or classical) on raw stereo samples."""

from __future__ import annotations

from stereo.evaluation.methods import (
    DisparityMethod,
    evaluate_method,
    network_method,
    raw_test_dataset,
    sgbm_method,
)

__all__ = ["DisparityMethod", "evaluate_method", "network_method", "raw_test_dataset", "sgbm_method"]
