"""Locate the Hydra config tree, for source checkouts and for installed wheels alike.

The configs live at the repository's top level (``conf/``) because they are the user interface; the
wheel ships the same tree as ``stereo/conf`` (see pyproject.toml), so entry points and tests look in
both places instead of relying on a relative ``config_path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """Absolute path of the config tree (installed copy first, then the source checkout's)."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"Hydra configs not found in {_PACKAGE_DIR / 'conf'} or {_PACKAGE_DIR.parent / 'conf'}; "
        "reinstall the package (pip install .) or run from a source checkout"
    )


CONFIG_DIR = str(config_dir())


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, outside ``@hydra.main`` (library code, scripts, tests)."""
    import hydra

    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        return hydra.compose(config_name, overrides=list(overrides))
