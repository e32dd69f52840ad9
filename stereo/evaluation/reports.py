"""What every comparison report records: the machine it ran on, the command and its table in Markdown.

The ablation, the real-pair comparison and the SGBM tuning write JSON + Markdown reports whose
figures are only meaningful next to the machine and versions that produced them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

import cv2
import torch


def machine_info() -> dict[str, Any]:
    """Processor, core and thread counts, torch/OpenCV versions and the GPU (if any) of this run."""
    return {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "opencv": cv2.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, one line per row, ending in a newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def command_line(module: str) -> str:
    """``python -m <module> <overrides>`` as the user typed it (bare when called as a function)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return " ".join(["python -m", module, *overrides])
