"""Texture sources for the synthetic stereo generator.

A texture source is any callable ``source(rng, height, width) -> float32 H×W×3 in [0, 1]``. The
generator paints every scene layer with one, in the layer's own (left-view) coordinates, so the same
texture appears in both views and the disparity stays exact. Procedural textures need nothing on
disk; :class:`ImageTextures` paints with crops of natural photographs, which is what models need to
transfer to real pairs.
"""

from __future__ import annotations

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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".ppm", ".bmp")


class ImageTextures:
    """Paints layers with random crops of natural images from a folder (searched recursively)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found for textures")

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        from stereo.data.io import read_image  # local: io is only needed when natural textures are used

        image = read_image(self.files[int(rng.integers(len(self.files)))])
        scale = rng.uniform(0.5, 1.5) * max(height / image.shape[0], width / image.shape[1], 1e-3)
        scale = max(scale, height / image.shape[0], width / image.shape[1])  # the crop must fit
        resized = cv2.resize(image, (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        y0 = int(rng.integers(resized.shape[0] - height + 1))
        x0 = int(rng.integers(resized.shape[1] - width + 1))
        return resized[y0:y0 + height, x0:x0 + width].astype(np.float32) / 255.0


def make_texture_source(texture_dir: str | Path | None = None, kinds: Sequence[str] = tuple(PROCEDURAL_KINDS)) -> TextureSource:
    """Natural-image textures from ``texture_dir`` when given, procedural ones otherwise."""
    return ImageTextures(texture_dir) if texture_dir else ProceduralTextures(kinds)
