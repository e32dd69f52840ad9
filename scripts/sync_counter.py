"""Count the operations that make the host wait for the device, on any device (CPU included).

A training step should queue work on the GPU and move on; every value the host has to read back
(``.item()``, ``bool(t)``, ``if mask.any()``, boolean-mask indexing, ``nonzero``) and every copy from
host memory into device memory stalls that pipeline. On a CPU nothing stalls, but the same operations
are still dispatched, so counting them under a dispatch mode finds the GPU stalls without a GPU:

- host reads: ``_local_scalar_dense`` (item/float/int/bool), ``is_nonzero``, ``equal``, ``nonzero``,
  ``masked_select`` and indexing with a boolean tensor (its output size depends on the data);
- host-to-device copies: ``_to_copy``/``copy_`` from a CPU tensor into a tensor on another device, and
  ``torch.tensor``/``as_tensor``/``asarray`` of Python or numpy data given a ``device`` (any device:
  on a GPU that is a copy from host memory; these constructors are invisible to dispatch modes, so
  they are counted at the Python API by a function mode).

    with HostSyncCounter() as counter:
        step()
    assert counter.total == 0, counter.counts

:class:`NondeterministicOpCounter` finds, the same way, the ops that have no deterministic CUDA kernel
(``torch.use_deterministic_algorithms(True)`` raises on them on a GPU, not on a CPU).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Ops whose result lives on the host or whose output size depends on tensor values.
HOST_READS = {aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.nonzero, aten.masked_select}
# Constructors that copy host data into a new tensor.
FROM_HOST_DATA = {torch.tensor, torch.as_tensor, torch.asarray}
# Ops that raise under torch.use_deterministic_algorithms(True) on CUDA (its documented list).
CUDA_NONDETERMINISTIC = {
    "avg_pool3d_backward", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward", "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",
    "max_unpool2d", "max_unpool3d", "upsample_linear1d_backward", "upsample_bilinear2d_backward",
    "upsample_bicubic2d_backward", "upsample_trilinear3d_backward", "reflection_pad1d_backward",
    "reflection_pad2d_backward", "reflection_pad3d_backward", "nll_loss_forward", "nll_loss2d_forward",
    "_ctc_loss_backward", "_embedding_bag_backward", "put_", "histc", "bincount", "median",
    "grid_sampler_2d_backward", "grid_sampler_3d_backward", "cumsum", "scatter_reduce",
}
# Ops that index; they read the mask on the host when an index is a boolean tensor.
INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


def _is_boolean_index(index: Any) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def _device_of(value: Any) -> torch.device | None:
    return value.device if isinstance(value, torch.Tensor) else None


def classify(func: Any, args: tuple, kwargs: dict) -> str | None:
    """The kind of host synchronisation ``func(*args, **kwargs)`` performs, or None."""
    packet = func.overloadpacket
    if packet in HOST_READS:
        return f"host read: {packet.__name__}"
    if packet in INDEXING and len(args) > 1 and any(_is_boolean_index(i) for i in (args[1] or ())):
        return f"host read: {packet.__name__} with a boolean mask"
    if packet is aten._to_copy:
        source, target = _device_of(args[0]), kwargs.get("device")
        if source is not None and source.type == "cpu" and target is not None and torch.device(target).type != "cpu":
            return "host-to-device copy"
    if packet is aten.copy_:
        target, source = _device_of(args[0]), _device_of(args[1])
        if source is not None and target is not None and source.type == "cpu" and target.type != "cpu":
            return "host-to-device copy"
    return None


class _Tally:
    """Counts by kind and by the phase that was current when they happened."""

    def __init__(self) -> None:
        self.phase = "all"
        self.counts: Counter[str] = Counter()
        self.by_phase: Counter[tuple[str, str]] = Counter()

    def add(self, kind: str) -> None:
        self.counts[kind] += 1
        self.by_phase[(self.phase, kind)] += 1


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, tally: _Tally) -> None:
        super().__init__()
        self.tally = tally

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        kind = classify(func, args, kwargs)
        if kind is not None:
            self.tally.add(kind)
        return func(*args, **kwargs)


class _ConstructorCounter(TorchFunctionMode):
    def __init__(self, tally: _Tally) -> None:
        super().__init__()
        self.tally = tally

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in FROM_HOST_DATA and kwargs.get("device") is not None and args and not isinstance(args[0], torch.Tensor):
            self.tally.add(f"host-to-device copy: torch.{func.__name__} of host data")
        return func(*args, **kwargs)


class HostSyncCounter:
    """Context manager counting host syncs by kind (``counts``); set ``phase`` to label where they happen."""

    def __init__(self) -> None:
        self._tally = _Tally()
        self._modes = (_ConstructorCounter(self._tally), _DispatchCounter(self._tally))

    def __enter__(self) -> "HostSyncCounter":
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    @property
    def phase(self) -> str:
        return self._tally.phase

    @phase.setter
    def phase(self, name: str) -> None:
        self._tally.phase = name

    @property
    def counts(self) -> Counter[str]:
        return self._tally.counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def in_phase(self, phase: str) -> Counter[str]:
        """Syncs by kind counted while ``phase`` was set."""
        return Counter({kind: n for (name, kind), n in self._tally.by_phase.items() if name == phase})


class NondeterministicOpCounter(TorchDispatchMode):
    """Context manager counting, by op name (``counts``), the ops without a deterministic CUDA kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = func.overloadpacket.__name__
        if name in CUDA_NONDETERMINISTIC:
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def count_host_syncs(function: Callable[[], Any]) -> Counter[str]:
    """Run ``function()`` once and return its host syncs by kind (empty: none)."""
    with HostSyncCounter() as counter:
        function()
    return counter.counts
