"""Shared fixtures: a tiny synthetic Scene Flow tree (generated once per session) and the real samples.

The tree is 256×256 because that is the smallest input PSMNet accepts (its SPP pools 64×64 cells of
the 1/4-resolution map); max_disp 32 keeps the cost volumes small.

Two tiers (targets on CI's 2 CPU cores, from a fresh clone):
- ``pytest -m "not slow"``: the quick tier (at most 2 minutes) for every edit. Every module of
  ``stereo/`` is imported (tests/test_packaging.py) and exercised by its own tests here, including a
  real training run of each light model config (tests/test_train.py) and every config (tests/test_configs.py).
- ``pytest``: the full suite (CI; at most 10 minutes) adds the tests marked ``@pytest.mark.slow``:
  longer training runs (overfitting, the SPP-sized model configs, resume after kill -9, two-process
  DDP, the ablation), full-size training-mode equality checks of the speed paths and the SGBM tuning
  grid. Mark a test slow when it takes more than a few seconds on 2 cores, unless it is the only quick
  check of its behaviour; a fixture that trains or generates data for tests that only read its output
  is session- or module-scoped.

Every run lists its 20 slowest tests (``--durations=20`` in pyproject.toml). ``@pytest.mark.gpu``: the
test needs CUDA and is skipped without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from stereo.config import CONFIG_DIR, compose  # noqa: F401  (tests compose real configs: from conftest import compose)
from stereo.data.real_samples import default_real_data_dir

# The GPU kit's modules (gpu_checks, sync_counter) live with the kit in scripts/; their tests import them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.gpu`` tests need CUDA: skipped, saying so, where torch sees no GPU."""
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")


# Every model config (conf/model/*.yaml): tests loop over the folder, so a new file is covered without edits.
MODEL_CONFIGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))

SYNTHETIC = {"num_train": 4, "num_test": 2, "height": 256, "width": 256, "max_disp": 32, "seed": 0}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated tree: FlyingThings3D/{frames_cleanpass,disparity}/{TRAIN,TEST}/... (see SYNTHETIC)."""
    from stereo.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, progress=False, **SYNTHETIC)
    return root


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """../shared/data/real beside the checkout (or $STEREO_REAL_DATA); the test is skipped when it is absent."""
    path = default_real_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data samples not available at {path}")
    return path


@pytest.fixture
def train_overrides(synthetic_root: Path, tmp_path: Path):
    """Overrides that make conf/train.yaml run on the tiny tree, on CPU, writing under tmp_path."""

    def make(*extra: str) -> list[str]:
        return training_overrides(synthetic_root, tmp_path, *extra)

    return make


def training_overrides(synthetic_root: Path, folder: Path, *extra: str) -> list[str]:
    """:func:`train_overrides` for a given folder (module-scoped fixtures)."""
    return [
        "data.generate=null",
        f"data.train.root={synthetic_root}",
        f"data.val.root={synthetic_root}",
        "data.crop_size=[256,256]",
        "data.batch_size=2",  # PSMNet's SPP BatchNorm needs > 1 value per channel at 256×256
        "data.num_workers=0",
        "data.augment.color=false",
        "model.max_disp=32",
        "trainer=cpu",
        f"paths.log_dir={folder / 'logs'}",
        f"paths.output_dir={folder / 'run'}",
        *extra,
    ]


TINY_MODEL_CONFIG = {"_target_": "stereo.models.PSMNet", "max_disp": 16, "aggregation": "basic", "attention": None}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained checkpoint in our format (docs/training.md#checkpoints: model_config + ``model.*`` weights)."""
    import torch

    from stereo.models import PSMNet

    torch.manual_seed(0)
    model = PSMNet(max_disp=16, aggregation="basic")
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.ckpt"
    torch.save({"hyper_parameters": {"model_config": TINY_MODEL_CONFIG},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="session")
def calibrated_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/inference_checkpoints.py's tiny network with calibrated BatchNorm (an untrained network's
    argmax flips on rounding noise), written once for every test that only reads it."""
    from inference_checkpoints import write_our_checkpoint

    return write_our_checkpoint(tmp_path_factory.mktemp("calibrated") / "tiny.ckpt", calibrated=True)
