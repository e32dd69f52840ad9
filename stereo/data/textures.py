"""Texture sources for the synthetic stereo generator.

A texture source is any callable ``source(rng, height, width) -> float32 H×W×3 in [0, 1]``. The
generator paints every scene layer with one, in the layer's own (left-view) coordinates, so the same
texture appears in both views and the disparity stays exact. Procedural textures need nothing on
disk; :class:`ImageTextures` paints with crops of natural photographs, which is what models need to
transfer to real pairs (SPEC 8: natural-image statistics matter more than the network).

Natural images come from a folder of the user's, or (``texture_dir: packaged``) from the photographs
that installed packages ship inside their wheels (:data:`PACKAGED_IMAGES`: scikit-image, scikit-learn,
matplotlib; ``pip install -e ".[textures]"``), nothing downloaded at run time. No image of a
benchmark may become a texture: the packaged set is an allow-list that names every file (scikit-image
also ships the Middlebury 2014 Motorcycle pair, an evaluation pair), and every candidate file, from
any folder, is refused when its name is a benchmark's or its bytes are a known evaluation image's
(:data:`BENCHMARK_IMAGE_SHA256`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np


class TextureSource(Protocol):
    """Anything that paints an H×W×3 float32 texture in [0, 1] from a random generator."""

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray: ...


def _resized_noise(rng: np.random.Generator, height: int, width: int, cell: float, channels: int) -> np.ndarray:
    """Random values on a grid of ``cell``-pixel spacing, upsampled smoothly to height×width."""
    grid_h = max(2, int(np.ceil(height / cell)) + 1)
    grid_w = max(2, int(np.ceil(width / cell)) + 1)
    small = rng.random((grid_h, grid_w, channels), dtype=np.float32)
    big = cv2.resize(small, (int(grid_w * cell), int(grid_h * cell)), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(big.shape[0], big.shape[1], channels)
    return big[:height, :width]


def multiscale_noise(
    rng: np.random.Generator, height: int, width: int, coarse_cell: float, fine_cell: float = 2.5,
    persistence: float = 0.6, channels: int = 1,
) -> np.ndarray:
    """Fractal value noise from ``coarse_cell`` down to ``fine_cell`` pixels, normalised to [0, 1]."""
    out = np.zeros((height, width, channels), np.float32)
    cell, amplitude = coarse_cell, 1.0
    while cell >= fine_cell:
        out += amplitude * _resized_noise(rng, height, width, cell, channels)
        cell, amplitude = cell / 2.0, amplitude * persistence
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _palette(rng: np.random.Generator, field: np.ndarray, count: int) -> np.ndarray:
    """Map a scalar field in [0, 1] (H×W×1) through a random piecewise-linear colour ramp."""
    colours = rng.random((count, 3), dtype=np.float32)
    stops = np.linspace(0.0, 1.0, count, dtype=np.float32)
    levels = np.linspace(0.0, 1.0, 1024, dtype=np.float32)
    table = np.stack([np.interp(levels, stops, colours[:, c]) for c in range(3)], axis=-1).astype(np.float32)
    return table[(np.clip(field[..., 0], 0.0, 1.0) * 1023.0 + 0.5).astype(np.intp)]  # 1024-level ramp: fast


def _coordinates(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle (for stripes and checkers)."""
    theta = rng.uniform(0.0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs * np.cos(theta) + ys * np.sin(theta), -xs * np.sin(theta) + ys * np.cos(theta)


def noise_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    field = multiscale_noise(rng, height, width, coarse_cell=rng.uniform(8.0, 96.0), persistence=rng.uniform(0.4, 0.8))
    return _palette(rng, field, count=int(rng.integers(2, 5)))


def stripes_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    u, _ = _coordinates(rng, height, width)
    period = rng.uniform(4.0, 40.0)
    wave = 0.5 + 0.5 * np.sin(2.0 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
    sharpness = rng.uniform(1.0, 6.0)
    field = np.clip((wave - 0.5) * sharpness + 0.5, 0.0, 1.0)[..., None]
    return _palette(rng, field.astype(np.float32), count=2)


def checker_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    u, v = _coordinates(rng, height, width)
    period = rng.uniform(6.0, 48.0)
    field = np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / (period * rng.uniform(0.5, 2.0)))
    field = np.clip(field * rng.uniform(2.0, 10.0) * 0.5 + 0.5, 0.0, 1.0)[..., None]
    return _palette(rng, field.astype(np.float32), count=2)


def gradient_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth colour ramp: nearly textureless, as walls and sky are in real scenes."""
    u, _ = _coordinates(rng, height, width)
    field = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    field = field[..., None] * 0.8 + 0.2 * multiscale_noise(rng, height, width, coarse_cell=64.0, fine_cell=16.0)
    return _palette(rng, field.astype(np.float32), count=2)


def blobs_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Random coloured ellipses on a noisy base (sub-pixel positions, anti-aliased)."""
    image = noise_texture(rng, height, width) * rng.uniform(0.3, 1.0)
    count = int(np.clip(height * width / rng.uniform(150.0, 1500.0), 4, 400))
    shift = 4  # cv2 fixed-point fraction bits: sub-pixel placement
    scale = 1 << shift
    for _ in range(count):
        centre = (int(rng.uniform(0, width) * scale), int(rng.uniform(0, height) * scale))
        axes = (int(rng.uniform(1.5, 16.0) * scale), int(rng.uniform(1.5, 16.0) * scale))
        colour = tuple(float(c) for c in rng.random(3))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA, shift)
    return image


PROCEDURAL_KINDS = {
    "noise": noise_texture,
    "stripes": stripes_texture,
    "checker": checker_texture,
    "gradient": gradient_texture,
    "blobs": blobs_texture,
}


class ProceduralTextures:
    """Draws one of several procedural texture kinds, with fine detail added so pixels stay matchable."""

    def __init__(self, kinds: Sequence[str] = tuple(PROCEDURAL_KINDS), fine_detail: float = 0.06) -> None:
        unknown = sorted(set(kinds) - set(PROCEDURAL_KINDS))
        if unknown or not kinds:
            raise ValueError(f"unknown texture kinds {unknown}; choose from {sorted(PROCEDURAL_KINDS)}")
        self.kinds = tuple(kinds)
        self.fine_detail = fine_detail

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        texture = PROCEDURAL_KINDS[kind](rng, height, width)
        if self.fine_detail > 0:
            detail = multiscale_noise(rng, height, width, coarse_cell=6.0, fine_cell=2.5, channels=1) - 0.5
            texture = texture + self.fine_detail * rng.uniform(0.3, 1.0) * detail
        return np.clip(texture, 0.0, 1.0).astype(np.float32)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".ppm", ".pgm", ".bmp")
PACKAGED = "packaged"

# Photographs and scans inside installed wheels: (package, folder inside it, files). Only these are
# used; synthetic drawings, masks and binary images of the same folders are left out (no natural
# statistics), and so is everything a benchmark owns.
PACKAGED_IMAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("skimage", "data", ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
                         "color.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
                         "page.png", "retina.jpg", "rocket.jpg", "text.png")),
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
    ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
)

# Names of benchmark images (stereo evaluation sets): a file whose name matches is never a texture.
BENCHMARK_NAME = re.compile(
    r"motorcycle|tsukuba|venus|cones|teddy|reindeer|wood2|middlebury|kitti|eth3d|sceneflow|flyingthings|"
    r"monkaa|driving|scene1\.row|^im[0-8]\.|^view[0-6]\.|^disp[0-8]", re.IGNORECASE)

# SHA-256 of the evaluation images this project scores on (../shared/data/real, compare_real) and of the
# Middlebury pair scikit-image ships: a copy under any name is refused.
BENCHMARK_IMAGE_SHA256 = frozenset({
    "ea45bf9ac8e0fe3b22b2bd9218d8ae5a57be7d954f460a9843d800020525d7c1",  # flyingthings3d/A-0032-0006 left
    "0ce052e62d981fd79182e781baa3cd502155af36df3fe55c5210c47676535a60",  # flyingthings3d/A-0032-0006 right
    "fd14fa89b443fffb712db3b47ab7e3196ae930b41a81bcd2f0daa99d615599de",  # flyingthings3d/TEST/A/0000/0006 left
    "952b0752dc649da9733d24f8c82dc6467616f84d91a44fdd781f06610b737649",  # flyingthings3d/TEST/A/0000/0006 right
    "7109d4635d996c9cfece994798fceac411565076a712c0f76f06fad7004c6b0b",  # kitti2012/000000_10 left
    "3be5c5cc460ee1f0435987a76c9844a2665e12411698ba6adbf2f9f0126bd893",  # kitti2012/000000_10 right
    "1bd9d1630c7e4960f573abc3657dd9431e1f29b5cd971041ee154cbdf2bad639",  # kitti2015/000046_10 left
    "165a81149d82f5ec22b95262f05d7242a083fb581ec8ec56f78b7f89e2c40af5",  # kitti2015/000046_10 right
    "1d326401c70e4bce95f0415a612dd00fa2984db89754f28d490b816aa731361a",  # middlebury2001/tsukuba left
    "c8048c2e0d834488adfae1c2525f4c004907b369dc90730ca11bf1f6dd8d925d",  # middlebury2001/tsukuba right
    "fef870c1e2471fe5b3b2bac9ca71810e8503e1489e4203288a982b40355b9172",  # middlebury2001/venus left
    "b2fca7b6f3aa7e1a34bc5eac2d99cbbc5dfc77ce531777b71153e2ed73290004",  # middlebury2001/venus right
    "e9875cec273b9c7a36ab8a0556b5c8451dd90cf50b5c8f30f4ab3bc8f201da92",  # middlebury2003/cones left
    "a3795d564445b1e041a88fec490d4140efec87c9a4c64c1b56f7240c3a4fc727",  # middlebury2003/cones right
    "9d1a9e5dc2d002f0fe7990c89ea3e39df432df347f17155c066a3257311c3277",  # middlebury2003/teddy left
    "cbdd9b989d840c0af8d3b56941f97f8df898e4f16fdfb005d862fb32e61bad74",  # middlebury2003/teddy right
    "5ea5e4a8d8a75973d4d2159866c94f2e22580b70e280a801381d1389afea5d09",  # middlebury2005/Reindeer left
    "ffa20d76a2afe7f56a29f6b165d3486b2290dfa896b3954ac5f671d64bec518c",  # middlebury2005/Reindeer right
    "eb8d705af79de608b3f54db9d6fd35b695b14b579ed0d662aa45d2bfa2c7a343",  # middlebury2006/Wood2 left
    "aefa4cdfe2a858667ac48f8cd12d57c558012a12e5950bc703391778f57a37c4",  # middlebury2006/Wood2 right
    "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",  # Middlebury 2014 Motorcycle left (scikit-image)
    "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",  # Middlebury 2014 Motorcycle right (scikit-image)
})


def packaged_image_files() -> list[Path]:
    """The allow-listed images of :data:`PACKAGED_IMAGES` that the installed packages hold (a package is
    located without importing it)."""
    files = []
    for package, folder, names in PACKAGED_IMAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        base = Path(list(spec.submodule_search_locations)[0]) / folder
        files += [base / name for name in names if (base / name).is_file()]
    return files


def benchmark_reason(path: Path) -> str | None:
    """Why ``path`` must not become a texture (a benchmark's name or bytes), or None."""
    if BENCHMARK_NAME.search(path.name):
        return f"its name looks like a benchmark image's ({BENCHMARK_NAME.search(path.name).group(0)!r})"
    if hashlib.sha256(path.read_bytes()).hexdigest() in BENCHMARK_IMAGE_SHA256:
        return "it is an evaluation image (its bytes match one this project scores on)"
    return None


class ImageTextures:
    """Paints layers with random crops of natural images from a folder (searched recursively), or from
    the packaged images (``folder="packaged"``). Benchmark images are refused (:func:`benchmark_reason`)."""

    def __init__(self, folder: str | Path) -> None:
        if str(folder) == PACKAGED:
            self.folder = Path(PACKAGED)
            self.files = packaged_image_files()
            if not self.files:
                raise FileNotFoundError("texture_dir=packaged: none of the packaged images is installed; "
                                        "pip install -e '.[textures]' (scikit-image, scikit-learn)")
        else:
            self.folder = Path(folder)
            self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise FileNotFoundError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found for textures")
        for path in self.files:
            reason = benchmark_reason(path)
            if reason:
                raise ValueError(f"{path}: refusing it as a training texture: {reason}; remove it from "
                                 f"{self.folder} (training on evaluation images makes every score meaningless)")

        self._decoded: dict[Path, np.ndarray] = {}

    def _image(self, path: Path) -> np.ndarray:
        """Decoded once per process: a scene paints many layers from a few photographs."""
        from stereo.data.io import read_image  # local: io is only needed when natural textures are used

        if path not in self._decoded:
            self._decoded[path] = read_image(path)
        return self._decoded[path]

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        image = self._image(self.files[int(rng.integers(len(self.files)))])
        scale = rng.uniform(0.5, 1.5) * max(height / image.shape[0], width / image.shape[1], 1e-3)
        scale = max(scale, height / image.shape[0], width / image.shape[1])  # the crop must fit
        resized = cv2.resize(image, (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        y0 = int(rng.integers(resized.shape[0] - height + 1))
        x0 = int(rng.integers(resized.shape[1] - width + 1))
        return resized[y0:y0 + height, x0:x0 + width].astype(np.float32) / 255.0


class MixedTextures:
    """Each texture from ``natural`` with probability ``fraction``, else from ``procedural``."""

    def __init__(self, natural: TextureSource, procedural: TextureSource, fraction: float) -> None:
        self.natural, self.procedural, self.fraction = natural, procedural, fraction

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        source = self.natural if rng.random() < self.fraction else self.procedural
        return source(rng, height, width)


def make_texture_source(natural: ImageTextures | None = None, kinds: Sequence[str] = tuple(PROCEDURAL_KINDS),
                        natural_fraction: float = 1.0) -> TextureSource:
    """Procedural textures, or with ``natural`` (an :class:`ImageTextures`, which several sources may
    share: its files are listed, checked and decoded once) natural images for a ``natural_fraction``
    of the layers (1: all of them) and procedural ones for the rest."""
    if not 0.0 <= natural_fraction <= 1.0:
        raise ValueError(f"natural_fraction must lie in [0, 1], got {natural_fraction}")
    if natural is None or natural_fraction == 0.0:
        return ProceduralTextures(kinds)
    if natural_fraction == 1.0:
        return natural
    return MixedTextures(natural, ProceduralTextures(kinds), natural_fraction)
