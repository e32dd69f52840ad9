"""Checkpoints written by an attacker: plain data that *names* code to run, and pickled objects.

Each hostile ``model_config`` would, if instantiated (``hydra.utils.instantiate``) or unpickled
without ``weights_only``, empty ``victim`` or create ``marker``; tests assert neither happens.
"""

from __future__ import annotations

import builtins
from pathlib import Path

import torch

VICTIM_TEXT = "precious data\n"


class _WritesMarker:
    """Unpickling this calls open(marker, "w"): the payload of a code-running pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def hostile_configs(victim: Path, marker: Path, payload: Path) -> dict[str, dict]:
    """model_config dicts keyed by attack; ``payload`` is a pickle that writes ``marker`` when loaded."""
    open_victim = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    return {
        "builtins.open": open_victim,
        "os.system": {"_target_": "os.system", "_args_": [f"touch {marker}"]},
        "subprocess.run": {"_target_": "subprocess.run", "_args_": [["touch", str(marker)]]},
        "torch.load": {"_target_": "torch.load", "f": str(payload), "weights_only": False},
        "nested attention": {"_target_": "stereo.models.PSMNet", "max_disp": 16, "aggregation": "basic",
                             "attention": {"feature": open_victim}},
        "component target": {**_network(), "cost_volume": open_victim},
        "component setting": {**_network(), "aggregation": {"_target_": "stereo.models.aggregations.BasicAggregation",
                                                            "channels": open_victim}},
        "insertion setting": {**_network(), "attention": [{"at": "aggregation.dres1", "kind": open_victim}]},
    }


def _network() -> dict:
    from stereo.models.presets import psmnet_config

    return psmnet_config(max_disp=16, aggregation="basic")


def write_payload(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "payload": _WritesMarker(marker)}, path)
    return path


def write_hostile_checkpoint(path: Path, model_config: dict) -> Path:
    """A weights-only-loadable file that looks like a training checkpoint (resume keys included)."""
    torch.save({"state_dict": {"model.weight": torch.zeros(1)}, "hyper_parameters": {"model_config": model_config},
                "loops": {}, "optimizer_states": [], "global_step": 0, "epoch": 0}, path)
    return path


def make_victim(folder: Path) -> tuple[Path, Path, Path]:
    """(victim file with VICTIM_TEXT, marker path that must never appear, payload pickle)."""
    victim, marker = folder / "victim.txt", folder / "MARKER"
    victim.write_text(VICTIM_TEXT)
    return victim, marker, write_payload(folder / "payload.pt", marker)


def untouched(victim: Path, marker: Path) -> bool:
    return victim.read_text() == VICTIM_TEXT and not marker.exists()
