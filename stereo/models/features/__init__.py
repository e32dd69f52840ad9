"""Feature extractors (``features._target_`` in conf/model/): PSMNet's and a light one."""

from .light import LightFeatures
from .psmnet import PSMNetFeatures
from .census import CensusFeatures

__all__ = ["CensusFeatures", "LightFeatures", "PSMNetFeatures"]
