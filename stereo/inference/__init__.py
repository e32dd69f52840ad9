"""Inference on users' rectified pairs: ``Predictor`` (API), output writers and pair discovery."""

from __future__ import annotations

from stereo.inference.outputs import FORMATS, OutputWriter, depth_map, make_calibration, point_cloud, write_ply
from stereo.inference.checks import InputError, SwappedPairWarning
from stereo.inference.predictor import Prediction, Predictor

__all__ = [
    "FORMATS",
    "InputError",
    "OutputWriter",
    "Prediction",
    "Predictor",
    "SwappedPairWarning",
    "depth_map",
    "make_calibration",
    "point_cloud",
    "write_ply",
]
