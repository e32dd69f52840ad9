"""LightningDataModule over any stereo datasets, configured from ``conf/data/*.yaml``.

Datasets arrive as factories (Hydra ``_partial_: true`` configs) and are built in ``setup()`` with
the right transform, so one config schema serves Scene Flow, KITTI, Middlebury, ETH3D and the
embedded synthetic set. ``prepare_data()`` generates the synthetic set when ``generate`` is given
(Lightning runs it once per node, before DDP workers read the files).
"""

from __future__ import annotations

import logging
from functools import partial
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stereo.data import synthetic
from stereo.data.transforms import EvalTransform, TrainTransform

AUGMENT_KEYS = ("color", "vertical_jitter", "scale", "stretch", "occlusion", "grayscale")

log = logging.getLogger(__name__)

DatasetFactory = Callable[..., Dataset]
ON_ERROR = ("raise", "skip")


class GuardedDataset(Dataset):
    """Applies the ``on_error`` policy to a dataset's failures while loading a sample.

    ``raise`` re-raises with the sample's index and name; ``skip`` logs the error (whose message names
    the file) and returns the next loadable sample instead.
    """

    def __init__(self, dataset: Dataset, on_error: str = "raise") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.dataset = dataset
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.dataset)

    def _describe(self, index: int) -> str:
        names = getattr(self.dataset, "names", None)
        return f"sample {index} ({names[index]})" if names is not None else f"sample {index}"

    def __getitem__(self, index: int) -> Any:
        if self.on_error == "raise":
            try:
                return self.dataset[index]
            except Exception as error:
                error.add_note(f"while loading {self._describe(index)} (data.on_error=raise; 'skip' skips such samples)")
                raise
        errors = []
        for offset in range(len(self.dataset)):
            candidate = (index + offset) % len(self.dataset)
            try:
                return self.dataset[candidate]
            except Exception as error:  # noqa: BLE001 - the policy is to skip any unreadable sample
                log.warning("skipping %s: %s", self._describe(candidate), error)
                errors.append(error)
                if len(errors) >= 10:
                    break
        raise RuntimeError(f"{len(errors)} consecutive samples from index {index} failed to load; last: {errors[-1]}")


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """One process's evaluation shard: indices rank, rank + W, ... Disjoint and unpadded: unlike
    DistributedSampler, no sample is repeated to even out ranks, so each is scored exactly once."""
    return list(range(rank, length, world_size))


class ShardSampler(DistributedSampler):
    """Evaluation shard of one process (:func:`shard_indices`) as a sampler for validation in training.

    Lightning's default DistributedSampler repeats up to W - 1 samples so that every process gets the
    same number; those would be scored twice in val/* metrics. Being a DistributedSampler, this one is
    kept by Lightning as it is. Every process needs at least one sample: DDP synchronises buffers in
    each process's first validation forward.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        if len(dataset) < num_replicas:
            raise ValueError(f"the evaluation set has {len(dataset)} samples, fewer than the {num_replicas} "
                             "processes: use fewer devices or more samples (each process needs at least one)")
        self.shard = shard_indices(len(dataset), rank, num_replicas)

    def __iter__(self):
        return iter(self.shard)

    def __len__(self) -> int:
        return len(self.shard)


class StereoDataModule(L.LightningDataModule):
    """Train/val/test loaders with crops, augmentation, worker seeding and an error policy.

    ``test=None`` evaluates on the validation set. ``pin_memory=None`` pins when CUDA is available.
    ``protocol`` names the evaluation protocol this data is scored under (the config's
    ``module.val_protocol`` and ``eval.protocol`` follow it); the datamodule only carries the name.
    """

    def __init__(
        self,
        train: DatasetFactory | None,
        val: DatasetFactory | None,
        test: DatasetFactory | None = None,
        batch_size: int = 2,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        crop_size: Sequence[int] = (256, 512),
        augment: Mapping[str, Any] | None = None,
        on_error: str = "raise",
        generate: Mapping[str, Any] | None = None,
        pin_memory: bool | None = None,
        protocol: str | None = None,
    ) -> None:
        super().__init__()
        if on_error not in ON_ERROR:
            raise ValueError(f"data.on_error must be one of {ON_ERROR}, got {on_error!r}")
        augment = dict(augment or {})
        unknown = sorted(set(augment) - set(AUGMENT_KEYS))
        if unknown:
            raise ValueError(f"data.augment: unknown keys {unknown}; known: {', '.join(AUGMENT_KEYS)}")
        self.train_factory, self.val_factory, self.test_factory = train, val, test
        self.batch_size, self.eval_batch_size, self.num_workers = int(batch_size), int(eval_batch_size), int(num_workers)
        self.crop_size = tuple(int(v) for v in crop_size)
        self.train_transform = TrainTransform(self.crop_size, **augment)  # a bad option fails here, before any data is read
        self.on_error = on_error
        self.generate = dict(generate) if generate is not None else None
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.protocol = protocol
        self.train_set: GuardedDataset | None = None
        self.val_set: GuardedDataset | None = None
        self.test_set: GuardedDataset | None = None

    def prepare_data(self) -> None:
        if self.generate is not None:
            synthetic.ensure_generated(**self.generate)

    def _build(self, factory: DatasetFactory | None, transform: Callable) -> GuardedDataset | None:
        return None if factory is None else GuardedDataset(factory(transform=transform), self.on_error)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._build(self.train_factory, self.train_transform)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._build(self.val_factory, EvalTransform())
        if stage in (None, "test") and self.test_set is None:
            self.test_set = (self._build(self.test_factory, EvalTransform()) if self.test_factory is not None
                             else self._build(self.val_factory, EvalTransform()))

    def _loader(self, dataset: GuardedDataset | None, batch_size: int, shuffle: bool, what: str) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"no {what} dataset: set data.{what} in the config (and call setup() first)")
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        # Training shards come from Lightning's DistributedSampler (use_distributed_sampler); evaluation
        # shards must not repeat samples.
        sampler = ShardSampler(dataset, world, rank) if world > 1 and not shuffle else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=shuffle and len(dataset) >= batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            # Seeds torch/numpy/random per worker, rank and epoch (Lightning's scheme); transforms draw from
            # the torch seed. (No cv2.setNumThreads here: in a forked worker it can deadlock.)
            worker_init_fn=partial(pl_worker_init_function, rank=rank) if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, True, "train")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, False, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, False, "test")
