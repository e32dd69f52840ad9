"""Start training from pretrained weights (``init_from=PATH``): weights only, everything else fresh.

Resuming (``ckpt_path=``) restores the optimiser, schedule and step counter of an interrupted run;
fine-tuning instead copies a network's weights into a freshly built model and starts a new schedule,
as the PSMNet authors' ``finetune.py --loadmodel`` does. Accepted files: our Lightning ``.ckpt``, our
exported weights (``stereo-export format=weights``, fp16), or an authors' PSMNet ``.tar``. The file is
read with ``torch.load(weights_only=True)`` and only its tensors are used: nothing is instantiated.

Keys that do not match are listed grouped by module. ``strict=True`` refuses any mismatch;
``strict=False`` loads every key present in both with the same shape and keeps the model's own
initialisation for the rest. That is how EA-PSMNet starts from PSMNet weights: its attention blocks
are absent from the file and stay at their zero-initialised identity, so the first forward pass
computes exactly the PSMNet function.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stereo.models.checkpoints import read_state_dict
from stereo.models.pretrained import resolve_checkpoint

GROUP_DEPTH = 2  # "feature_extraction.inserted.layer4.queries.weight" -> "feature_extraction.inserted"


@dataclass
class InitReport:
    """What ``init_from_weights`` loaded and what it left at the model's own initialisation."""

    path: Path
    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """One line per category, keys grouped by module with counts (a full key list is unreadable)."""
        lines = [f"init_from={self.path} ({self.source} checkpoint): {self.loaded} tensors fit the model"]
        for title, keys in (("missing from the file (kept at the model's initialisation)", self.missing),
                            ("in the file but not in the model (ignored)", self.unexpected),
                            ("shape differs (kept at the model's initialisation)", self.mismatched)):
            if keys:
                lines.append(f"  {len(keys)} {title}: {group_by_module(keys)}")
        return "\n".join(lines)


def group_by_module(keys: list[str]) -> str:
    """``"feature_extraction.inserted (8), aggregation.inserted (8)"`` for a list of keys."""
    groups: dict[str, int] = defaultdict(int)
    for key in keys:
        groups[".".join(key.split(" ")[0].split(".")[:GROUP_DEPTH])] += 1
    return ", ".join(f"{name} ({count})" for name, count in sorted(groups.items()))


def init_from_weights(model: nn.Module, path: str | Path, strict: bool = True) -> InitReport:
    """Copy the weights in ``path`` into ``model`` in place; see the module docstring.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` (naming the file and the
    offending modules) for an unreadable file, a mismatch under ``strict``, or a file that shares no
    tensor with the model at all.
    """
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: init_from weights file not found")
    state, source = read_state_dict(path)
    foreign = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if foreign:
        raise ValueError(f"{path}: state_dict entries that are not tensors: {foreign[:5]}")
    expected = model.state_dict()
    mismatched = sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                        for k in state.keys() & expected.keys() if state[k].shape != expected[k].shape)
    usable = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    report = InitReport(path, source, len(usable), sorted(expected.keys() - state.keys()),
                        sorted(state.keys() - expected.keys()), mismatched)
    if not usable:
        raise ValueError(f"{path}: no tensor of the file fits {type(model).__name__} (wrong model or wrong file?)\n"
                         + report.describe())
    if strict and not report.exact:
        raise ValueError(report.describe() + "\n  refused: the file does not fit the model exactly; "
                         "init_strict=false loads the matching tensors and keeps the rest "
                         "(e.g. EA-PSMNet from PSMNet weights)")
    model.load_state_dict(usable, strict=False)  # copies in place: fp16 exports become the model's dtype
    return report
