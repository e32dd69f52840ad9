"""stereo.allocator: with retention on, freed large tensors' memory is reused instead of being
returned to the kernel and faulted in again (zero-filled) on the next allocation."""

from __future__ import annotations

import resource

import pytest
import torch
from conftest import compose

from stereo.allocator import retain_freed_memory

SIZES = (16 << 20, 64 << 20, 32 << 20)  # bytes; the larger ones are above glibc's mmap threshold
ROUNDS = 10


def _page_faults(rounds: int) -> int:
    """Minor page faults while allocating, touching and freeing SIZES ``rounds`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        tensors = [torch.empty(size // 4).fill_(1.0) for size in SIZES]
        del tensors
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_retained_memory_is_reused_instead_of_faulted_in_again():
    if not retain_freed_memory(True):
        pytest.skip("not a glibc process: the allocator switch is a no-op here")
    try:
        pages_per_round = sum(SIZES) // 4096  # what every round costs without retention (4 KB pages)
        # The heap settles within a few rounds (measured: 28672, 16384, 0, 8192, 4096, 0, ...).
        assert _page_faults(ROUNDS) < 3 * pages_per_round
    finally:
        assert retain_freed_memory(False) is False


def test_training_retains_freed_memory_and_inference_does_not_by_default():
    assert compose("train", []).retain_freed_memory is True
    assert compose("eval", ["ckpt_path=x"]).retain_freed_memory is False
    assert compose("infer", ["ckpt_path=x"]).retain_freed_memory is False
