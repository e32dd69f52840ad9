"""Cost volumes (``cost_volume._target_`` in conf/model/): one class per file.

Each takes the two views' features (``in_channels``, given by the network) and the number of
disparity levels at the features' resolution, and says how many channels it produces
(``out_channels``), which the aggregation is built with.
"""

from .concatenation import ConcatenationVolume
from .correlation import CorrelationVolume
from .group_correlation import GroupCorrelationVolume
from .pooled_correlation import PooledCorrelationVolume

__all__ = ["ConcatenationVolume", "CorrelationVolume", "GroupCorrelationVolume", "PooledCorrelationVolume"]
