"""3-D cost aggregations (``aggregation._target_`` in conf/model/): one class per file.

Each is built with the cost volume's ``in_channels`` and returns a list of 1-channel costs at the
volume's resolution (training regresses all of them, inference the last).
"""

from .basic import BasicAggregation
from .light import LightAggregation
from .stacked_hourglass import StackedHourglass

__all__ = ["BasicAggregation", "LightAggregation", "StackedHourglass"]
