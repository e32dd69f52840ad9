"""Feature extractors (``features._target_`` in conf/model/): PSMNet's and a light one."""

from .census import CensusFeatures
from .light import LightFeatures
from .psmnet import PSMNetFeatures

__all__ = ["CensusFeatures", "LightFeatures", "PSMNetFeatures"]
