"""Texture sources: packaged natural images, and the guarantee that no benchmark image becomes a texture."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from stereo.data.real_samples import load_real_samples
from stereo.data.textures import (BENCHMARK_IMAGE_SHA256, BENCHMARK_NAME, PACKAGED, PACKAGED_IMAGES, ImageTextures,
                                  MixedTextures, benchmark_reason, make_texture_source, packaged_image_files)


def _benchmark_images(real_data_dir: Path) -> list[Path]:
    """Every left/right image of the real pairs the project scores on (compare_real)."""
    dataset = load_real_samples(real_data_dir)
    return [Path(path) for record in dataset.records for path in (record.left, record.right)]


def test_every_real_evaluation_image_is_refused_as_a_texture_under_any_name(real_data_dir, tmp_path):
    images = _benchmark_images(real_data_dir)
    assert len(images) == 20
    for index, image in enumerate(images):
        folder = tmp_path / f"textures{index}"
        folder.mkdir()
        shutil.copy(image, folder / f"holiday_photo{image.suffix}")  # renamed: caught by its bytes
        with pytest.raises(ValueError, match="refusing it as a training texture: it is an evaluation image"):
            ImageTextures(folder)


def test_the_known_hashes_are_the_real_pairs_images(real_data_dir):
    """The embedded list is not stale: each real evaluation image's bytes are in it."""
    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in _benchmark_images(real_data_dir)}
    assert digests <= BENCHMARK_IMAGE_SHA256


@pytest.mark.parametrize("name", ["motorcycle_left.png", "im2.ppm", "view1.png", "scene1.row3.col3.ppm",
                                  "kitti_000000_10.png", "Teddy.png", "disp6.pgm"])
def test_a_file_named_like_a_benchmark_image_is_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"not decoded: refused by name first")
    assert benchmark_reason(tmp_path / name) is not None
    with pytest.raises(ValueError, match=f"{name}: refusing it as a training texture"):
        ImageTextures(tmp_path)


def test_packaged_allow_list_names_no_benchmark_image():
    for _, _, names in PACKAGED_IMAGES:
        for name in names:
            assert BENCHMARK_NAME.search(name) is None, name


def test_scikit_images_middlebury_pair_never_becomes_a_texture():
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        pytest.skip("scikit-image not installed (pip install -e '.[textures]')")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    for side in ("left", "right"):
        image = data / f"motorcycle_{side}.png"
        assert hashlib.sha256(image.read_bytes()).hexdigest() in BENCHMARK_IMAGE_SHA256
        assert image not in packaged_image_files()
    # the whole data folder as a user's texture folder is refused because of that pair
    with pytest.raises(ValueError, match="motorcycle"):
        ImageTextures(data)


def test_packaged_textures_paint_from_the_allow_list_only():
    files = packaged_image_files()
    if not files:
        pytest.skip("no packaged images installed (pip install -e '.[textures]')")
    source = ImageTextures(PACKAGED)
    assert source.files == files and all(benchmark_reason(path) is None for path in files)
    texture = source(np.random.default_rng(0), 40, 60)
    assert texture.shape == (40, 60, 3) and texture.dtype == np.float32 and 0 <= texture.min() <= texture.max() <= 1


def test_mixed_source_draws_natural_images_for_the_given_share():
    calls = {"natural": 0, "procedural": 0}

    def stub(kind):
        def source(rng, height, width):
            calls[kind] += 1
            return np.zeros((height, width, 3), np.float32)
        return source

    mixed = MixedTextures(stub("natural"), stub("procedural"), 0.3)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        mixed(rng, 2, 2)
    # Binomial(2000, 0.3): standard deviation 20.5, so ±100 is about five of them
    assert abs(calls["natural"] - 600) < 100 and calls["natural"] + calls["procedural"] == 2000
    with pytest.raises(ValueError, match="natural_fraction"):
        make_texture_source(None, natural_fraction=1.5)
