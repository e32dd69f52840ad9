"""Stereo depth estimation: PSMNet-style cost volumes with efficient (linear) attention.

Data flow: ``stereo.data`` (readers, datasets) -> ``stereo.models`` (networks) ->
``stereo.training`` (Lightning module, losses, metrics) -> ``stereo.inference`` (predictor, outputs).
Entry points: ``python -m stereo.train | stereo.evaluate | stereo.infer | stereo.export``.
"""

__version__ = "0.1.0"
