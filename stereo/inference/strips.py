"""Strip planning for images whose full-image pass does not fit the memory budget: how tall a strip
may be and where each starts. Strips are full-width horizontal bands overlapping by ``overlap`` rows
(stitched by :mod:`stereo.inference.stitching`), so peak memory follows the strip, not the image.
"""

from __future__ import annotations

import torch

from stereo.inference.memory import FIXED_OVERHEAD_BYTES, HEADROOM


def strip_height(network: torch.nn.Module, width: int, max_disp: int, batch: int, max_memory_gb: float,
                 overlap: int, optimized: bool) -> int:
    """Tallest strip (a multiple of the network's size divisor) whose estimated peak fits in
    ``max_memory_gb``; at least the network's minimum input, and taller than both overlaps so that each
    strip adds new rows. The estimate grows linearly with the rows, so one row's figure scales it."""
    spec = network.input_spec
    padded_width = spec.padded_size(spec.min_size, width)[1]  # the width the network runs: padded as a whole image
    per_row = HEADROOM * network.inference_bytes(1, padded_width, max_disp, batch, bool(optimized))
    rows = int((max_memory_gb * 1e9 - FIXED_OVERHEAD_BYTES) / per_row // spec.divisor * spec.divisor)
    return max(rows, spec.min_size, 2 * overlap + 4 * spec.divisor)


def strip_starts(height: int, strip: int, overlap: int) -> list[int]:
    """Start rows of strips of ``strip`` rows overlapping by ``overlap``, the last flush with the bottom."""
    step = strip - overlap
    starts = list(range(0, max(height - strip, 0) + 1, step))
    if starts[-1] + strip < height:
        starts.append(height - strip)
    return starts
