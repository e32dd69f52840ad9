"""Hydra's record of a run (``.hydra/``) and the config record of a manifest, written by the run once
the folder's checks passed.
"""

from __future__ import annotations

from typing import Any

from stereo.data.io import atomic_write
from stereo.output_dirs.manifest import HYDRA_RECORD, Run


def config_record(cfg: Any) -> dict[str, Any]:
    """The resolved config and the command line's overrides, for a manifest."""
    from omegaconf import OmegaConf

    return {"config": OmegaConf.to_container(cfg, resolve=True), "overrides": _overrides()}


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under @hydra.main (tests, notebooks)
        return []


def write_hydra_record(run: Run, cfg: Any) -> None:
    """Hydra's record of a run (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``), written
    here, after the folder's checks passed: the configs set ``hydra.output_subdir: null`` so that Hydra
    does not write it before a run that is then refused (it would describe results it did not make)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return
    texts = {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
             "overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task))}
    paths = {name: run.folder / HYDRA_RECORD / name for name in texts}
    run.plan(paths.values())
    run.save("running")
    for name, text in texts.items():
        atomic_write(paths[name], text.encode())
