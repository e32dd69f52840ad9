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


def machine_info(**extra: Any) -> dict[str, Any]:
    """Processor, core and thread counts, Python/torch/OpenCV versions, the GPU (if any) and the
    1-minute load average of this run, plus ``extra``: the one record of every report and benchmark."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "opencv": cv2.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": load, **extra}


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (cells as ``str()``), one line per row, ending in a newline."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def command_line(module: str) -> str:
    """``python -m <module> <overrides>`` as the user typed it (bare when called as a function)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return " ".join(["python -m", module, *overrides])
