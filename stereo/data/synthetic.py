"""Synthetic stereo pairs with exact disparity, written in the FlyingThings3D layout.

The embedded default dataset: anyone can train and test without the 200 GB Scene Flow download, and
every reader, split and transform is exercised on the very format of the real data.

Geometry. Every scene layer (a background plus textured objects) is a slanted plane in disparity
space, d(x, y) = a·x + b·y + c in left-view pixel coordinates, cut out by an analytic shape mask and
painted with a texture defined in left-view coordinates. The left view takes, per pixel, the layer
with the largest disparity (closest). A right-view pixel x_r sees the point of a layer whose left
coordinate solves x_r = x_l − d(x_l, y), i.e. x_l = (x_r + b·y + c) / (1 − a); the mask and texture
are sampled there and layers are again z-tested by their disparity. Both views, occlusions and both
disparity maps therefore follow from the same geometry, and the ground truth is exact up to the
bilinear resampling of the texture in the right view.

A Hydra command (conf/synthetic.yaml); without arguments it generates the tree training uses::

    python -m stereo.data.synthetic [root=data/synthetic num_train=200 num_test=20 height=320 width=640 max_disp=96 seed=0 workers=2]
    python -m stereo.data.synthetic style.texture_dir=packaged style.natural_fraction=0.6 style.thin_probability=0.1

The scene style (``style.*``, :class:`SceneStyle`) is recorded in the tree's marker with the other
parameters, so a changed style regenerates the tree.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from stereo.cli import command
from stereo.data.textures import PROCEDURAL_KINDS, ImageTextures, TextureSource, make_texture_source

SPLITS = {"train": "TRAIN", "test": "TEST"}
FIRST_FRAME = 6  # FlyingThings3D sequences hold frames 0006..0015
FRAMES_PER_SEQUENCE = 10
MARKER_NAME = "synthetic_complete.json"
IN_PROGRESS_NAME = "synthetic_in_progress.json"
TREE_NAME = "FlyingThings3D"
BACKGROUND_KINDS = ("noise", "blobs")
PARALLEL_FROM = 32  # pairs

Mask = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SceneStyle:
    """Knobs of the scene distribution beyond size and disparity range (``data.generate.style``).

    The defaults are the original generator's; every knob that is off draws no random number, so a
    tree generated with the defaults is the same, pixel for pixel, as before the knob existed.
    """

    min_objects: int = 6
    max_objects: int = 16
    min_object_size: float = 0.05  # object radius, a fraction of min(height, width), log-uniform between
    max_object_size: float = 0.45
    thin_probability: float = 0.0  # an object is a thin bar or pole (1-6 px wide): fences, wires, legs
    max_slant: float = 0.12  # largest |a|, |b| of a plane, in disparity pixels per pixel
    fronto_parallel_fraction: float = 0.3
    ground_probability: float = 0.4  # a floor plane (road-like slant) below a horizon
    # Disparity distribution over (0, max_disp): each scene's own range is max_disp times a fraction
    # drawn from scene_range (real pairs range from 16 px to the whole range; Watson et al. draw the
    # maximum per image), and an object's disparity is lo + (hi - lo)·u^disparity_exponent (< 1: more near).
    scene_range: tuple[float, float] = (1.0, 1.0)
    disparity_exponent: float = 0.8
    # A large, weakly textured surface close to the camera (a plank, a wall, a table top): where
    # matching is ambiguous and the disparity is large, the failure case of light networks.
    near_surface_probability: float = 0.0
    noise_std: float = 1.5  # camera noise, grey levels (0-255), drawn in [0, noise_std] per view
    blur_probability: float = 0.3
    max_blur_sigma: float = 0.8
    texture_kinds: tuple[str, ...] = tuple(PROCEDURAL_KINDS)
    texture_dir: str | None = None  # natural images: a folder, or "packaged" (textures.PACKAGED_IMAGES)
    natural_fraction: float = 1.0  # with texture_dir: the share of layers painted with natural images

    def __post_init__(self) -> None:
        checks = {
            "min_objects/max_objects": 0 <= self.min_objects <= self.max_objects,
            "min_object_size/max_object_size": 0 < self.min_object_size <= self.max_object_size,
            "scene_range": len(self.scene_range) == 2 and 0 < self.scene_range[0] <= self.scene_range[1] <= 1,
            "disparity_exponent": self.disparity_exponent > 0,
            "natural_fraction": 0 <= self.natural_fraction <= 1,
            **{name: 0 <= getattr(self, name) <= 1 for name in (
                "thin_probability", "fronto_parallel_fraction", "ground_probability", "near_surface_probability",
                "blur_probability")},
            "noise_std/max_blur_sigma/max_slant": min(self.noise_std, self.max_blur_sigma, self.max_slant) >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"data.generate.style: invalid {', '.join(bad)} in {self}")

    def texture_sources(self) -> tuple[TextureSource, TextureSource]:
        """(objects, background): periodic or flat backgrounds would make whole scenes ambiguous."""
        natural = ImageTextures(self.texture_dir) if self.texture_dir and self.natural_fraction > 0 else None
        objects = make_texture_source(natural, self.texture_kinds, self.natural_fraction)
        calm = [kind for kind in self.texture_kinds if kind in BACKGROUND_KINDS] or list(self.texture_kinds)
        return objects, make_texture_source(natural, calm, self.natural_fraction)

    @classmethod
    def from_dict(cls, values: dict | None) -> SceneStyle:
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"data.generate.style: unknown keys {unknown}; known: {[f.name for f in fields(cls)]}")
        for key in ("texture_kinds", "scene_range"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass
class Layer:
    """A planar scene layer: disparity plane, shape, and texture over its integer bounding box."""

    a: float
    b: float
    c: float
    mask: Mask
    x0: int  # texture[j, i] is the colour at left-view point (x0 + i, y0 + j)
    y0: int
    texture: np.ndarray = field(repr=False)

    @property
    def x1(self) -> int:
        return self.x0 + self.texture.shape[1]

    @property
    def y1(self) -> int:
        return self.y0 + self.texture.shape[0]

    def disparity_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.a * x + self.b * y + self.c


# ---------------------------------------------------------------- shapes (analytic masks)


def _local(x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = x - cx, y - cy
    cos, sin = np.cos(angle), np.sin(angle)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _random_shape(rng: np.random.Generator, cx: float, cy: float, radius: float) -> tuple[Mask, float]:
    """An analytic mask function of float coordinates and the radius that bounds it."""
    angle = rng.uniform(0, np.pi)
    kind = ("ellipse", "rectangle", "polygon", "blob")[int(rng.integers(4))]
    if kind == "ellipse":
        rx, ry = radius, radius * rng.uniform(0.25, 1.0)

        def mask(x, y):
            u, v = _local(x, y, cx, cy, angle)
            return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0

        return mask, radius
    if kind == "rectangle":  # includes thin bars, which real scenes are full of
        rx, ry = radius * rng.uniform(0.4, 1.0), radius * rng.uniform(0.05, 0.7)

        def mask(x, y):
            u, v = _local(x, y, cx, cy, angle)
            return (np.abs(u) <= rx) & (np.abs(v) <= ry)

        return mask, float(np.hypot(rx, ry))
    if kind == "polygon":  # star-shaped polygon: a sector lookup plus one edge test per pixel
        count = int(rng.integers(3, 9))
        phis = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = radius * rng.uniform(0.45, 1.0, count)
        px, py = radii * np.cos(phis), radii * np.sin(phis)
        ex, ey = np.roll(px, -1) - px, np.roll(py, -1) - py  # edge k runs from vertex k to k+1

        def mask(x, y):
            u, v = _local(x, y, cx, cy, angle)
            sector = (np.searchsorted(phis, np.mod(np.arctan2(v, u), 2 * np.pi)) - 1) % count
            return ex[sector] * (v - py[sector]) - ey[sector] * (u - px[sector]) >= 0

        return mask, radius
    harmonics = np.arange(1, 5)
    amplitudes = rng.uniform(0, 0.35, 4) / harmonics
    phases = rng.uniform(0, 2 * np.pi, 4)
    base = radius / (1.0 + amplitudes.sum())

    def mask(x, y):
        u, v = _local(x, y, cx, cy, angle)
        phi = np.arctan2(v, u)[..., None]
        boundary = base * (1.0 + (amplitudes * np.sin(harmonics * phi + phases)).sum(-1))
        return u * u + v * v <= boundary * boundary

    return mask, radius


# ---------------------------------------------------------------- scene sampling


def _fit_plane(rng: np.random.Generator, style: SceneStyle, cx: float, cy: float, half_w: float, half_h: float,
               lo: float, hi: float, centre_disparity: float) -> tuple[float, float, float]:
    """A random slanted plane whose disparity stays within [lo, hi] over the box around (cx, cy)."""
    if rng.random() < style.fronto_parallel_fraction:
        a = b = 0.0
    else:
        a, b = rng.uniform(-style.max_slant, style.max_slant, 2)
    spread = abs(a) * half_w + abs(b) * half_h
    if 2 * spread > hi - lo:  # too slanted for the box: flatten to fit
        a, b = a * (hi - lo) / (2 * spread + 1e-9), b * (hi - lo) / (2 * spread + 1e-9)
        spread = abs(a) * half_w + abs(b) * half_h
    d = float(np.clip(centre_disparity, lo + spread, hi - spread))
    return float(a), float(b), d - a * cx - b * cy


def _shade(rng: np.random.Generator, a: float, b: float, light: np.ndarray) -> float:
    """Lambertian brightness of a plane; slope in disparity space stands in for surface orientation."""
    normal = np.array([-a * 6.0, -b * 6.0, 1.0])
    normal /= np.linalg.norm(normal)
    return float(np.clip(rng.uniform(0.25, 0.45) + 0.75 * max(0.0, float(normal @ light)), 0.2, 1.15))


def _ground(rng: np.random.Generator, height: int, bg_w: int, bg_h: int, lo: float, max_disp: float,
            textures: TextureSource, light: np.ndarray) -> Layer:
    """A floor below a (slightly tilted) horizon whose disparity grows towards the bottom, as roads do."""
    horizon = rng.uniform(0.3, 0.75) * height
    tilt = rng.uniform(-0.1, 0.1)
    at_horizon = lo + rng.uniform(0.0, 0.1) * max_disp
    # d = b·(y − horizon − tilt·x) + at_horizon: constant along the horizon line, growing below it.
    b = rng.uniform(0.25, 0.7) * max_disp / max(height - horizon, 1.0)
    steepest = height - horizon + abs(tilt) * bg_w  # largest (y − horizon − tilt·x) inside the frame
    b = min(b, (max_disp - 1.0 - at_horizon) / steepest)
    tilt = float(np.clip(tilt, -0.3 / b, 0.3 / b))  # keeps |a| <= 0.3, so x_l = (x_r + b·y + c)/(1 − a) is stable
    a, c = -b * tilt, at_horizon - b * horizon

    def mask(x, y):
        return y >= horizon + tilt * x

    texture = np.clip(textures(rng, bg_h, bg_w) * _shade(rng, a, b, light), 0, 1)
    return Layer(float(a), float(b), float(c), mask, -1, -1, texture)


def sample_scene(rng: np.random.Generator, height: int, width: int, max_disp: float, style: SceneStyle,
                 textures: tuple[TextureSource, TextureSource]) -> list[Layer]:
    """Background first, then objects; all in left-view coordinates."""
    if style.scene_range != (1.0, 1.0):
        max_disp = max(4.0, max_disp * rng.uniform(*style.scene_range))
    lo, hi = 0.5, max_disp - 1.0
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    light /= np.linalg.norm(light)
    # The background covers every left pixel and every point a right pixel can see (x_l < W + max_disp).
    bg_w, bg_h = int(np.ceil(width + max_disp)) + 2, height + 2
    a, b, c = _fit_plane(rng, style, bg_w / 2, height / 2, bg_w / 2, height / 2, lo,
                         max(lo + 2.0, 0.35 * max_disp), rng.uniform(lo, 0.25 * max_disp))
    object_textures, background_textures = textures
    background = np.clip(background_textures(rng, bg_h, bg_w) * _shade(rng, a, b, light), 0, 1)
    layers = [Layer(a, b, c, lambda x, y: np.ones(np.broadcast_shapes(np.shape(x), np.shape(y)), bool), -1, -1, background)]
    if rng.random() < style.ground_probability:
        layers.append(_ground(rng, height, bg_w, bg_h, lo, max_disp, background_textures, light))

    size = min(height, width)
    for _ in range(int(rng.integers(style.min_objects, style.max_objects + 1))):
        radius = float(np.exp(rng.uniform(np.log(style.min_object_size * size), np.log(style.max_object_size * size))))
        cx, cy = rng.uniform(-0.15 * width, 1.15 * width), rng.uniform(-0.1 * height, 1.1 * height)
        if style.thin_probability and rng.random() < style.thin_probability:
            mask, extent = _thin_shape(rng, cx, cy, radius)
        else:
            mask, extent = _random_shape(rng, cx, cy, radius)
        centre_disparity = lo + (hi - lo) * rng.random() ** style.disparity_exponent
        layers.append(_object_layer(rng, style, cx, cy, mask, extent, lo, hi, centre_disparity, object_textures, light))
    if style.near_surface_probability and rng.random() < style.near_surface_probability:
        layers.append(_near_surface(rng, style, height, width, lo, hi, background_textures, light))
    return layers


def _object_layer(rng: np.random.Generator, style: SceneStyle, cx: float, cy: float, mask: Mask, extent: float,
                  lo: float, hi: float, centre_disparity: float, textures: TextureSource, light: np.ndarray,
                  contrast: float = 1.0) -> Layer:
    """A planar layer around (cx, cy) painted with ``textures`` (its contrast scaled by ``contrast``)."""
    x0, y0 = int(np.floor(cx - extent)) - 2, int(np.floor(cy - extent)) - 2
    x1, y1 = int(np.ceil(cx + extent)) + 3, int(np.ceil(cy + extent)) + 3
    a, b, c = _fit_plane(rng, style, cx, cy, extent + 3, extent + 3, lo, hi, centre_disparity)
    texture = textures(rng, y1 - y0, x1 - x0)
    if contrast != 1.0:
        mean = texture.mean(axis=(0, 1), keepdims=True)
        texture = mean + contrast * (texture - mean)
    texture = np.clip(texture * _shade(rng, a, b, light), 0, 1)
    return Layer(a, b, c, mask, x0, y0, texture)


def _thin_shape(rng: np.random.Generator, cx: float, cy: float, length: float) -> tuple[Mask, float]:
    """A bar 1-6 px wide and ``length`` long at any angle (poles, wires, table legs, fence slats)."""
    angle = rng.uniform(0, np.pi)
    half_width = rng.uniform(0.5, 3.0)

    def mask(x, y):
        u, v = _local(x, y, cx, cy, angle)
        return (np.abs(u) <= length) & (np.abs(v) <= half_width)

    return mask, float(np.hypot(length, half_width))


def _near_surface(rng: np.random.Generator, style: SceneStyle, height: int, width: int, lo: float, hi: float,
                  textures: TextureSource, light: np.ndarray) -> Layer:
    """A large rectangle at 55-100 % of the scene's range, with its texture's contrast cut to 5-35 %."""
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.2, 1.0) * height
    half_w, half_h = rng.uniform(0.2, 0.5) * width, rng.uniform(0.15, 0.4) * height
    angle = rng.uniform(-0.3, 0.3)

    def mask(x, y):
        u, v = _local(x, y, cx, cy, angle)
        return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)

    centre = lo + (hi - lo) * rng.uniform(0.55, 1.0)
    return _object_layer(rng, style, cx, cy, mask, float(np.hypot(half_w, half_h)), lo, hi, centre, textures, light,
                         contrast=rng.uniform(0.05, 0.35))


# ---------------------------------------------------------------- rendering


def _render_left(layers: list[Layer], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    depth = np.full((height, width), -np.inf, np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for layer in layers:
        xa, xb, ya, yb = max(layer.x0, 0), min(layer.x1, width), max(layer.y0, 0), min(layer.y1, height)
        if xa >= xb or ya >= yb:
            continue
        xs = np.arange(xa, xb, dtype=np.float32)[None, :]  # broadcasting: no full coordinate grids
        ys = np.arange(ya, yb, dtype=np.float32)[:, None]
        d = layer.disparity_at(xs, ys).astype(np.float32)
        win = depth[ya:yb, xa:xb]
        hit = layer.mask(xs, ys) & (d > win)
        win[hit] = d[hit]
        image[ya:yb, xa:xb][hit] = layer.texture[ya - layer.y0:yb - layer.y0, xa - layer.x0:xb - layer.x0][hit]
    return image, depth


def _render_right(layers: list[Layer], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    depth = np.full((height, width), -np.inf, np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for layer in layers:
        ya, yb = max(layer.y0, 0), min(layer.y1, height)
        corners = layer.disparity_at(np.array([layer.x0, layer.x1, layer.x0, layer.x1], np.float64),
                                     np.array([layer.y0, layer.y0, layer.y1, layer.y1], np.float64))
        # x_r = x_l - d: the layer's right-view footprint spans its box shifted by the disparity range.
        xa = max(int(np.floor(layer.x0 - corners.max())) - 1, 0)
        xb = min(int(np.ceil(layer.x1 - corners.min())) + 1, width)
        if xa >= xb or ya >= yb:
            continue
        xs = np.arange(xa, xb, dtype=np.float32)[None, :]
        ys = np.broadcast_to(np.arange(ya, yb, dtype=np.float32)[:, None], (yb - ya, xb - xa))
        x_left = ((xs + np.float32(layer.b) * ys + np.float32(layer.c)) / np.float32(1.0 - layer.a))
        d = layer.disparity_at(x_left, ys).astype(np.float32)
        win = depth[ya:yb, xa:xb]
        inside = (x_left >= layer.x0 + 1) & (x_left <= layer.x1 - 2)  # bilinear neighbours in the texture
        hit = inside & layer.mask(x_left, ys) & (d > win)
        if not hit.any():
            continue
        colour = cv2.remap(layer.texture, x_left - layer.x0, ys - layer.y0, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        win[hit] = d[hit]
        image[ya:yb, xa:xb][hit] = colour[hit]
    return image, depth


def _camera(rng: np.random.Generator, image: np.ndarray, style: SceneStyle) -> np.ndarray:
    """Per-view optics and sensor: optional Gaussian blur, additive noise, 8-bit quantisation."""
    image = image * np.float32(255.0)
    if style.max_blur_sigma > 0 and rng.random() < style.blur_probability:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, style.max_blur_sigma))
    if style.noise_std > 0:
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        image += noise * np.float32(rng.uniform(0, style.noise_std))
    image += np.float32(0.5)
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def render_pair(rng: np.random.Generator, height: int, width: int, max_disp: float,
                style: SceneStyle | None = None,
                textures: tuple[TextureSource, TextureSource] | None = None) -> dict[str, np.ndarray]:
    """One stereo pair: uint8 RGB ``left``/``right`` and float32 ``disparity_left``/``disparity_right``.

    ``textures`` = (object source, background source), by default ``style.texture_sources()``.
    """
    style = style or SceneStyle()
    textures = textures or style.texture_sources()
    layers = sample_scene(rng, height, width, max_disp, style, textures)
    left, disparity_left = _render_left(layers, height, width)
    right, disparity_right = _render_right(layers, height, width)
    return {
        "left": _camera(rng, left, style),
        "right": _camera(rng, right, style),
        "disparity_left": disparity_left,
        "disparity_right": disparity_right,
    }


# ---------------------------------------------------------------- dataset tree


def sample_paths(root: str | Path, split: str, index: int) -> dict[str, Path]:
    """Where sample ``index`` of ``split`` lives: sequence index // 10, frames 0006..0015."""
    sequence, frame = divmod(index, FRAMES_PER_SEQUENCE)
    rel = Path(SPLITS[split]) / "A" / f"{sequence:04d}"
    name = f"{FIRST_FRAME + frame:04d}"
    base = Path(root) / TREE_NAME
    return {
        "left": base / "frames_cleanpass" / rel / "left" / f"{name}.png",
        "right": base / "frames_cleanpass" / rel / "right" / f"{name}.png",
        "disparity_left": base / "disparity" / rel / "left" / f"{name}.pfm",
        "disparity_right": base / "disparity" / rel / "right" / f"{name}.pfm",
    }


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent stream per sample, so any subset regenerates identically."""
    return np.random.default_rng(np.random.SeedSequence([seed, list(SPLITS).index(split), index]))


def _parameters(num_train: int, num_test: int, height: int, width: int, max_disp: float, seed: int,
                style: SceneStyle) -> dict:
    """What the marker records, as JSON reads it back (lists, not tuples), so that it compares equal."""
    return json.loads(json.dumps({"num_train": int(num_train), "num_test": int(num_test), "height": int(height),
                                  "width": int(width), "max_disp": float(max_disp), "seed": int(seed),
                                  "style": asdict(style)}))


def _validate(num_train: int, num_test: int, height: int, width: int, max_disp: float) -> None:
    if num_train < 0 or num_test < 0 or num_train + num_test == 0:
        raise ValueError(f"need a positive number of samples, got num_train={num_train}, num_test={num_test}")
    if height < 16 or width < 16:
        raise ValueError(f"image size {height}x{width} is too small (at least 16x16)")
    if not 2.0 <= max_disp < width:
        raise ValueError(f"max_disp={max_disp} must lie in [2, width={width})")


def _write_sample(root: Path, split: str, index: int, seed: int, height: int, width: int, max_disp: float,
                  style: SceneStyle) -> None:
    from stereo.data.io import write_image, write_pfm  # the readers' own writers: one codec per format

    pair = render_pair(sample_rng(seed, split, index), height, width, max_disp, style, _worker_textures(style))
    for key, path in sample_paths(root, split, index).items():
        (write_image if key in ("left", "right") else write_pfm)(path, pair[key])


_TEXTURES: dict[SceneStyle, tuple[TextureSource, TextureSource]] = {}


def _worker_textures(style: SceneStyle) -> tuple[TextureSource, TextureSource]:
    """Texture sources built once per process (an image folder is listed once, not per pair)."""
    if style not in _TEXTURES:
        _TEXTURES[style] = style.texture_sources()
    return _TEXTURES[style]


def _single_threaded() -> None:
    cv2.setNumThreads(1)  # processes, not threads, share the cores


def generate(root: str | Path, num_train: int, num_test: int, height: int, width: int, max_disp: float,
             seed: int = 0, style: SceneStyle | dict | None = None, progress: bool = True,
             workers: int | None = None) -> Path:
    """Write the tree (both views, both disparities, TRAIN and TEST); returns ``root``.

    ``workers`` processes render in parallel (default: one per CPU core from ``PARALLEL_FROM`` pairs
    on); the output does not depend on it. The completion marker is written last, so an interrupted run is detected and
    redone by :func:`ensure_generated`.
    """
    style = style if isinstance(style, SceneStyle) else SceneStyle.from_dict(style)
    _validate(num_train, num_test, height, width, max_disp)
    _worker_textures(style)  # a missing texture folder fails here, before anything is written
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    params = _parameters(num_train, num_test, height, width, max_disp, seed, style)
    (root / MARKER_NAME).unlink(missing_ok=True)
    (root / IN_PROGRESS_NAME).write_text(json.dumps(params, indent=2))
    jobs = [("train", i) for i in range(num_train)] + [("test", i) for i in range(num_test)]
    write = partial(_write_sample, root, seed=seed, height=height, width=width, max_disp=max_disp, style=style)
    bar = tqdm(total=len(jobs), desc=f"synthetic {height}x{width}", unit="pair", disable=not progress)
    if workers is None:  # starting processes costs about a second: worth it only for real datasets
        workers = (os.cpu_count() or 1) if len(jobs) >= PARALLEL_FROM else 1
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        for split, index in jobs:
            write(split, index)
            bar.update()
    else:
        # spawn, not fork: a forked copy of a process whose OpenCV/OpenMP thread pools already ran can deadlock.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_single_threaded) as pool:
            futures = [pool.submit(write, split, index) for split, index in jobs]
            for future in as_completed(futures):
                future.result()
                bar.update()
    bar.close()
    (root / MARKER_NAME).write_text(json.dumps(params, indent=2))
    (root / IN_PROGRESS_NAME).unlink(missing_ok=True)
    return root


def _complete(root: Path, params: dict) -> bool:
    marker = root / MARKER_NAME
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if recorded != params:
        return False
    return all(path.is_file() for split, count in (("train", params["num_train"]), ("test", params["num_test"]))
               for index in range(count) for path in sample_paths(root, split, index).values())


# Every file the generator writes, relative to the tree (sample_paths): nothing else is ever deleted.
GENERATED_FILE = re.compile(r"(frames_cleanpass|disparity)/(TRAIN|TEST)/A/\d{4}/(left|right)/\d{4}\.(png|pfm)")


def _remove_generated_files(tree: Path) -> None:
    """Delete the files an earlier generation wrote (their paths are the generator's layout) and the
    folders left empty; a file the generator never writes (a user's note, an extra image) is kept and
    named, so that regenerating with another style never loses anyone's data."""
    kept = []
    for path in sorted(tree.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        relative = path.relative_to(tree).as_posix()
        if path.is_symlink() or path.is_file():
            if GENERATED_FILE.fullmatch(relative) and not path.is_symlink():
                path.unlink()
            else:
                kept.append(relative)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if kept:
        print(f"{tree}: regenerating; kept {len(kept)} file(s) the generator did not write: "
              f"{', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}")


def ensure_generated(root: str | Path, num_train: int, num_test: int, height: int, width: int, max_disp: float,
                     seed: int = 0, style: SceneStyle | dict | None = None, progress: bool = True,
                     workers: int | None = None) -> bool:
    """Generate unless ``root`` already holds a complete tree made with the same parameters.

    Returns True when it generated. A tree this generator made earlier (marker present, complete or
    not) with other parameters is regenerated: the files it wrote are deleted, anything else in the
    tree is kept and named; a ``FlyingThings3D`` folder without our marker is someone else's data and
    is never touched (FileExistsError).
    """
    style = style if isinstance(style, SceneStyle) else SceneStyle.from_dict(style)
    _validate(num_train, num_test, height, width, max_disp)
    root = Path(root)
    if _complete(root, _parameters(num_train, num_test, height, width, max_disp, seed, style)):
        return False
    tree = root / TREE_NAME
    if tree.exists():
        if not ((root / MARKER_NAME).exists() or (root / IN_PROGRESS_NAME).exists()):
            raise FileExistsError(
                f"{tree} exists but was not made by stereo.data.synthetic (no {MARKER_NAME}); "
                "refusing to overwrite it: choose another root or remove the folder")
        _remove_generated_files(tree)
    generate(root, num_train, num_test, height, width, max_disp, seed, style, progress, workers)
    return True


def run(cfg: DictConfig) -> bool:
    """Generate the tree ``cfg`` describes unless it is already complete; True when it generated."""
    keys = ("root", "num_train", "num_test", "height", "width", "max_disp", "seed", "workers")
    options = {key: cfg[key] for key in keys}
    options["style"] = OmegaConf.to_container(cfg.style, resolve=True) if cfg.get("style") is not None else None
    generated = ensure_generated(**options)
    print(f"{options['root']}: {'generated' if generated else 'already complete, nothing to do'}")
    return generated


@command("synthetic")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
