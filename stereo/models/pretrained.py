"""Weights shipped inside the package, by name (docs/model_card.md).

Every command that takes a checkpoint (``ckpt_path=``, compare_real's ``checkpoints=``, ``init_from=``)
also takes one of these names; ``stereo.infer`` without ``ckpt_path`` uses :data:`DEFAULT`. A name
resolves to a file inside the installed package, which is then read exactly like any other
checkpoint of ours (``checkpoints.read_checkpoint``: tensors and plain data only, the model config
validated against the component registry), so shipped weights are data, never code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# name -> file in stereo/weights/ (fp16 tensors, see the model card): ea_census_zero_shot is trained by
# experiment=ea_census_cpu, then experiment=ea_census_cpu_stage2 (from ea_census_stage1), then
# experiment=ea_census_cpu_deep (from ea_census_stage2), then experiment=ea_census_cpu_context four times
# (from ea_census_stage3 to ea_census_stage6), then experiment=ea_census_cpu_detail four times (from
# ea_census_stage7 to ea_census_stage10), exported with regression_window=1; each earlier stage's weights
# ship so that every command runs from a fresh clone
SHIPPED = {"ea_census_zero_shot": "ea_census_zero_shot.ckpt",
           **{f"ea_census_stage{n}": f"ea_census_stage{n}.ckpt" for n in range(1, 11)}}
DEFAULT = "ea_census_zero_shot"


def is_shipped(value: Any) -> bool:
    return isinstance(value, str) and value in SHIPPED


def resolve_checkpoint(value: Any) -> Path:
    """The file ``value`` names: a shipped name's file inside the package, anything else as a path."""
    if is_shipped(value):
        path = WEIGHTS_DIR / SHIPPED[value]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the shipped weights {value!r} are missing from this installation; "
                                    "reinstall the package (pip install -e .)")
        return path
    return Path(str(value))
