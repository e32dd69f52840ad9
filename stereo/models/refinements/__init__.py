"""Disparity refinements (``refinement._target_`` in conf/model/, optional): from the regressed
disparity to a sharper one, guided by the left image and the matching features."""

from .local_cost import LocalCostRefinement

__all__ = ["LocalCostRefinement"]
