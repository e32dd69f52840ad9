"""Score a network on a dataset under an explicit protocol, in one process or sharded over ranks.

Used by ``stereo.evaluate`` (the command), by training (``evaluate_before`` / ``evaluate_after``) and
by the scripts. Writes ``per_image.csv``, ``metrics.json`` (summary + the protocol verbatim) and
disparity exports (PFM + colour PNG + error PNG). Under torchrun each process scores a disjoint,
unpadded shard (indices rank, rank+W, ...), so every sample is counted exactly once.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Subset

from stereo.data.datamodule import shard_indices
from stereo.data.io import atomic_write, json_bytes, write_image, write_pfm
from stereo.devices import resolve_device
from stereo.evaluation import protocols
from stereo.evaluation.loop import score_samples
from stereo.evaluation.protocols import Protocol
from stereo.models import DEFAULT_MAX_DISP
from stereo.visualize import colorize_disparity, colorize_error


def distributed_rank() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun.

    On GPUs each process first selects its own GPU (``LOCAL_RANK``): NCCL collectives such as
    ``all_gather_object`` work on the current device, which would otherwise be ``cuda:0`` for every rank.
    A bare ``device=cuda`` then also means this process's GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(resolve_device("auto"))
            dist.init_process_group(backend="nccl")
        else:
            dist.init_process_group(backend="gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _export(directory: Path, name: str, prediction: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
            max_disp: float, options: Mapping[str, Any]) -> None:
    pred_np, gt_np, mask_np = (t.detach().float().cpu().numpy() for t in (prediction, gt, mask))
    stem = directory / name
    stem.parent.mkdir(parents=True, exist_ok=True)
    if options.get("pfm", True):
        write_pfm(stem.with_name(stem.name + ".pfm"), pred_np)
    if options.get("png", True):
        write_image(stem.with_name(stem.name + ".png"), colorize_disparity(pred_np, 0.0, max_disp))
    if options.get("error_map", True) and mask_np.any():
        write_image(stem.with_name(stem.name + "_error.png"), colorize_error(pred_np, gt_np, mask_np))


def evaluate_model(
    model: torch.nn.Module,
    dataset: Dataset,
    protocol: Protocol | str,
    output_dir: str | Path,
    export: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    extra_record: Mapping[str, Any] | None = None,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """Score ``model`` on every sample of ``dataset`` (sharded across ranks when distributed).

    Returns the summary (also written as metrics.json by rank 0, next to per_image.csv).
    ``export``: {"max_images": N|None (None = all, 0 = none), "pfm", "png", "error_map": bool}.
    """
    protocol = protocols.get_protocol(protocol)
    if len(dataset) == 0:
        raise ValueError(f"the evaluation dataset is empty (protocol {protocol.name})")
    export = dict(export or {})
    max_exports = export.get("max_images", None)
    output_dir = Path(output_dir)
    rank, world = distributed_rank()
    indices = shard_indices(len(dataset), rank, world)
    loader = DataLoader(Subset(dataset, indices), batch_size=1, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model = model.to(device).eval()
    max_disp = float(getattr(model, "max_disp", protocol.max_disp or DEFAULT_MAX_DISP))
    network_route = protocols.route(model, protocol)

    def run(batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        result = protocols.predict(model, batch, protocol)
        if result["prediction"].is_cuda:  # the row's seconds: the work done, not the kernels queued
            torch.cuda.synchronize(result["prediction"].device)
        return result, network_route

    samples = ((index, batch["name"][0] if "name" in batch else f"{index:06d}", batch)
               for index, batch in zip(indices, loader))
    rows: list[dict[str, Any]] = []
    for row, result in score_samples(samples, run, protocol, desc=desc, progress=rank == 0, total=len(indices)):
        row["route"] = row["route"]["route"]  # the CSV column; metrics.json holds the whole record
        rows.append(row)
        if max_exports is None or row["index"] < max_exports:
            _export(output_dir / "disparity", row["name"], result["prediction"][0], result["disparity"][0],
                    result["mask"][0], max_disp, export)
    model.train(was_training)  # evaluate_before runs on the network that is trained next
    if world > 1:
        gathered: list[list[dict[str, Any]]] = [[] for _ in range(world)]
        dist.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    rows.sort(key=lambda row: row["index"])
    names = [row["name"] for row in rows]
    if len(set(names)) != len(names) or len(rows) != len(dataset):
        raise RuntimeError(f"evaluation counted {len(rows)} rows for {len(dataset)} samples ({len(set(names))} unique names)")
    summary: dict[str, Any] = dict(protocol.summarize(rows))
    summary.update(
        protocol=protocol.to_dict(),
        route=network_route,
        seconds=float(sum(row["seconds"] for row in rows)),
        world_size=world,
        per_image_csv=str(output_dir / "per_image.csv"),
        exports=str(output_dir / "disparity") if max_exports != 0 else None,
        **(extra_record or {}),
    )
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(output_dir / "per_image.csv", table.getvalue().encode())
        atomic_write(output_dir / "metrics.json", json_bytes(summary))
    return summary


def apply_protocol_to_data(data_cfg: DictConfig, protocol: Protocol) -> tuple[DictConfig, list[str]]:
    """Make a Scene Flow data config select what a Scene Flow protocol prescribes (files, pass, FT3D TEST).

    So ``data=sceneflow protocol=sceneflow_psmnet`` scores every cleanpass file while
    ``protocol=sceneflow`` scores the finalpass standard list, without further overrides. Returns the
    config and every setting it changed (``data.test.passes=final (was clean)``), for the command to
    print and record: a protocol never changes the data silently.
    """
    if protocol.dataset != "sceneflow":
        return data_cfg, []
    data_cfg = data_cfg.copy()
    changes = []
    prescribed = {"files": protocol.files, "passes": protocol.passes, "subsets": ["flyingthings3d"]}
    for split in ("val", "test"):
        node = data_cfg.get(split)
        if node is not None and str(node.get("_target_", "")).endswith("SceneFlowDataset"):
            for key, value in prescribed.items():
                old = node.get(key)
                old = OmegaConf.to_container(old) if OmegaConf.is_config(old) else old
                if old != value:
                    changes.append(f"data.{split}.{key}={value} (was {old})")
                node[key] = value
    return data_cfg, changes


def build_eval_dataset(data_cfg: DictConfig, split: str = "test") -> Dataset:
    """The datamodule's test (or val) dataset, generating the synthetic data first when configured.

    Evaluation always loads with ``on_error=raise``: ``skip`` (meant for training) would replace an
    unreadable sample by another one, so some images would be scored twice and one never.
    """
    if data_cfg.get("on_error") == "skip":
        data_cfg = data_cfg.copy()
        data_cfg.on_error = "raise"
    datamodule = hydra.utils.instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test" if split == "test" else "validate")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    return loader.dataset
