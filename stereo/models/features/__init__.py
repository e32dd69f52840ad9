"""Feature extractors (``features._target_`` in conf/model/): PSMNet's and a light one."""

from .light import LightFeatures
from .psmnet import PSMNetFeatures

__all__ = ["LightFeatures", "PSMNetFeatures"]
