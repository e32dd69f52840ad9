"""Soft census descriptors: a matching feature that is the same on every camera, by construction.

Learned features are the data-hungry, domain-specific part of a stereo network (SPEC 8: the largest
zero-shot gains come from domain-invariant matching features). The census transform, which
StereoSGBM and the MC-CNN-era pipelines match on, describes a pixel by the signs of its
neighbours' differences to it: unchanged by any monotonic change of brightness, gain, gamma or
white balance between the two cameras. Here the sign is softened, tanh((I(p+o) − I(p)) / sigma), so
the cost is differentiable and flat regions give near-zero descriptors (low, flat correlation: an
honest "no information" the aggregation can learn to fill in) rather than noise-driven bits.

The grey image is the mean of the three input channels (any fixed linear map of RGB works: census
only compares a pixel with its neighbours), taken at 1/``scale`` resolution by area averaging.
The descriptors are computed in the input's precision also under autocast (mixed-precision training
or inference): in bf16 a difference of two normalised grey values keeps about 3 significant digits,
an error as large as the softness ``sigma`` on the weakly textured surfaces that need the census
most. The extractor has no parameters and no state-dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..components import FeatureExtractor
from ..precision import autocast_off


def neighbour_offsets(radius: int) -> list[tuple[int, int]]:
    """The (row, column) offsets of the (2r+1)² − 1 neighbours in a (2r+1)² window, row by row (the
    descriptor's channel order), in the padded image's coordinates (the centre is (r, r))."""
    size = 2 * radius + 1
    return [(y, x) for y in range(size) for x in range(size) if (y, x) != (radius, radius)]


class CensusFeatures(FeatureExtractor):
    """N×3×H×W → N×((2r+1)²−1)×H/s×W/s soft census descriptors (s = ``scale``)."""

    def __init__(self, radius: int = 3, scale: int = 2, sigma: float = 0.05) -> None:
        super().__init__()
        if not isinstance(radius, int) or radius < 1 or scale not in (1, 2, 4) or not sigma > 0:
            raise ValueError(f"CensusFeatures needs radius >= 1, scale in (1, 2, 4) and sigma > 0, "
                             f"got radius={radius!r}, scale={scale!r}, sigma={sigma!r}")
        self.radius, self.scale, self.sigma = radius, scale, float(sigma)
        self.stride = scale
        self.out_channels = (2 * radius + 1) ** 2 - 1
        self.insertion_points = {}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with autocast_off(image.device.type):
            grey = image.mean(dim=1, keepdim=True)
            if self.scale > 1:
                grey = F.avg_pool2d(grey, self.scale)
            r, (height, width) = self.radius, grey.shape[-2:]
            padded = F.pad(grey, (r,) * 4, mode="replicate")
            centre = padded[..., r:r + height, r:r + width]
            # one subtraction per neighbour: what a convolution with +1/-1 kernels computes (bit for bit
            # on CPU), without its one-channel input and few outputs, which oneDNN runs 2-10x slower
            differences = torch.cat([padded[..., y:y + height, x:x + width] - centre
                                     for y, x in neighbour_offsets(r)], dim=1)
            return torch.tanh(differences / self.sigma)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, scale={self.scale}, sigma={self.sigma}"
