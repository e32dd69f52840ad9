"""Training and evaluation transforms: aligned crops, per-view colour jitter, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereo.data.normalize import IMAGENET_MEAN, IMAGENET_STD, denormalize_image, normalize_image
from stereo.data.transforms import EvalTransform, TrainTransform

H, W = 48, 80


def _coded_sample() -> dict:
    """Every pixel encodes its own (row, column), so a crop's offset can be read back from it."""
    rows, cols = np.mgrid[0:H, 0:W]
    image = np.stack([rows * 5 % 256, cols * 3 % 256, (rows + cols) % 7 * 30], axis=-1).astype(np.uint8)
    return {
        "left": image.copy(),
        "right": image.copy(),
        "disparity": (rows * 1000 + cols).astype(np.float32),
        "valid": (cols % 2 == 0),
        "noc": (rows % 2 == 0),
        "name": "coded",
    }


def _offset(disparity: torch.Tensor) -> tuple[int, int]:
    value = int(disparity[0, 0])
    return value // 1000, value % 1000


def test_train_crop_takes_the_same_window_from_both_views_and_all_maps():
    transform = TrainTransform((16, 32), color=False, rng=np.random.default_rng(0))
    source = _coded_sample()
    offsets = set()
    for _ in range(10):
        out = transform(_coded_sample())
        y0, x0 = _offset(out["disparity"])
        offsets.add((y0, x0))
        window = (slice(y0, y0 + 16), slice(x0, x0 + 32))
        assert out["left"].shape == out["right"].shape == (3, 16, 32)
        assert out["left"].dtype == torch.float32 and out["valid"].dtype == torch.bool
        np.testing.assert_array_equal(denormalize_image(out["left"]), source["left"][window])
        np.testing.assert_array_equal(denormalize_image(out["right"]), source["right"][window])
        np.testing.assert_array_equal(out["disparity"].numpy(), source["disparity"][window])
        np.testing.assert_array_equal(out["valid"].numpy(), source["valid"][window])
        np.testing.assert_array_equal(out["noc"].numpy(), source["noc"][window])
        assert out["name"] == "coded"
    assert len(offsets) > 5  # the crop position is random


def test_vertical_jitter_shifts_only_the_right_view_within_the_limit():
    transform = TrainTransform((16, 32), color=False, vertical_jitter=2, rng=np.random.default_rng(1))
    source = _coded_sample()
    shifts = set()
    for _ in range(30):
        out = transform(_coded_sample())
        y0, x0 = _offset(out["disparity"])
        np.testing.assert_array_equal(denormalize_image(out["left"]), source["left"][y0:y0 + 16, x0:x0 + 32])
        right = denormalize_image(out["right"])
        matches = [dy for dy in range(-2, 3) if 0 <= y0 + dy <= H - 16
                   and np.array_equal(right, source["right"][y0 + dy:y0 + dy + 16, x0:x0 + 32])]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 1 and max(map(abs, shifts)) <= 2


def test_colour_augmentation_differs_between_views_but_keeps_geometry():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    sample = {"left": image, "right": image.copy(), "disparity": np.ones((H, W), np.float32),
              "valid": np.ones((H, W), bool), "name": "x"}
    out = TrainTransform((H, W), color=True, rng=np.random.default_rng(3))(sample)
    left, right = denormalize_image(out["left"]).astype(int), denormalize_image(out["right"]).astype(int)
    assert np.abs(left - right).mean() > 2  # asymmetric: drawn separately per view
    assert np.abs(left - image).mean() > 2  # colour changed at all
    # Photometric only: the jittered view still follows the original's spatial pattern.
    correlation = np.corrcoef(left.mean(-1).ravel(), image.mean(-1).ravel())[0, 1]
    assert correlation > 0.8


def test_eval_transform_only_normalises_with_imagenet_statistics():
    sample = _coded_sample()
    out = EvalTransform()(sample)
    assert out["left"].shape == (3, H, W) and out["disparity"].shape == (H, W)
    expected = (sample["left"][..., 0].astype(np.float32) / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    np.testing.assert_allclose(out["left"][0].numpy(), expected, atol=1e-5)
    torch.testing.assert_close(out["right"], normalize_image(sample["right"]))
    assert out["valid"].dtype == torch.bool and out["noc"].dtype == torch.bool


def test_crop_larger_than_the_image_is_a_clear_error():
    with pytest.raises(ValueError, match=r"coded: image is 80x48, smaller than the training crop 96x32"):
        TrainTransform((32, 96), rng=np.random.default_rng(0))(_coded_sample())


def test_generator_bound_to_the_torch_seed_is_reproducible():
    def crops(seed: int) -> list[tuple[int, int]]:
        torch.manual_seed(seed)
        transform = TrainTransform((16, 32), color=False)
        return [_offset(transform(_coded_sample())["disparity"]) for _ in range(5)]

    assert crops(7) == crops(7)
    assert crops(7) != crops(8)


# ---- augmentations on a real pair with ground truth: the disparity must stay right

def _venus(real_data_dir) -> dict:
    from stereo.data.real_samples import load_real_samples

    dataset = load_real_samples(real_data_dir)
    index = [record.name for record in dataset.records].index("middlebury2001/venus")
    return dataset[index]


def _warp_error(left: np.ndarray, right: np.ndarray, disparity: np.ndarray, valid: np.ndarray) -> float:
    """Mean |left − right(x − d)| (grey levels) over valid pixels whose match lies inside the right view."""
    import cv2

    height, width = disparity.shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    source = xs - disparity
    warped = cv2.remap(right.astype(np.float32), source, ys, cv2.INTER_LINEAR)
    mask = valid & (source >= 0) & (disparity > 0)
    return float(np.abs(left.astype(np.float32) - warped)[mask].mean())


def test_scaling_multiplies_the_disparity_by_the_horizontal_factor(real_data_dir):
    from stereo.data.transforms import _scale_sample

    sample = _venus(real_data_dir)
    for scale_x, scale_y in ((0.7, 0.8), (1.3, 1.2)):
        out = _scale_sample(sample, scale_x, scale_y)
        assert out["left"].shape[:2] == out["disparity"].shape == out["valid"].shape
        right_gt = _warp_error(out["left"], out["right"], out["disparity"], out["valid"])
        # a scaler that resized the map but forgot to scale its values would be this far off:
        unscaled = _warp_error(out["left"], out["right"], out["disparity"] / scale_x, out["valid"])
        assert right_gt < 0.5 * unscaled


def test_random_scale_and_stretch_keep_the_ground_truth_exact_enough_to_warp(real_data_dir):
    sample = _venus(real_data_dir)
    baseline = _warp_error(sample["left"], sample["right"], sample["disparity"], sample["valid"])
    transform = TrainTransform((256, 320), color=False, scale=(-0.3, 0.3), stretch=0.2, rng=np.random.default_rng(0))
    for _ in range(4):
        out = transform(dict(sample))
        left, right = denormalize_image(out["left"]), denormalize_image(out["right"])
        disparity, valid = out["disparity"].numpy(), out["valid"].numpy()
        error = _warp_error(left, right, disparity, valid)
        at_zero = _warp_error(left, right, np.full_like(disparity, 1e-3), valid)
        assert error < 2.0 * baseline + 1.0 and error < 0.5 * at_zero  # resampling blurs a little, nothing more


def test_occlusion_patches_change_only_the_right_view(real_data_dir):
    sample = _venus(real_data_dir)
    transform = TrainTransform((256, 320), color=False, occlusion=1.0, rng=np.random.default_rng(1))
    crop = TrainTransform((256, 320), color=False, rng=np.random.default_rng(1))
    out, plain = transform(dict(sample)), crop(dict(sample))  # same rng stream: same crop
    torch.testing.assert_close(out["left"], plain["left"], rtol=0, atol=0)
    torch.testing.assert_close(out["disparity"], plain["disparity"], rtol=0, atol=0)
    changed = (denormalize_image(out["right"]) != denormalize_image(plain["right"])).any(-1)
    rows, cols = np.nonzero(changed)
    assert changed.any() and changed.sum() <= 2 * 100 * 100
    assert rows.max() - rows.min() < 2 * 100 + 256 and len(np.unique(denormalize_image(out["right"])[changed], axis=0)) == 1


def test_grayscale_turns_both_views_grey_and_keeps_the_ground_truth(real_data_dir):
    sample = _venus(real_data_dir)
    out = TrainTransform((256, 320), color=False, grayscale=1.0, rng=np.random.default_rng(2))(dict(sample))
    plain = TrainTransform((256, 320), color=False, rng=np.random.default_rng(2))(dict(sample))
    for key in ("left", "right"):
        image = denormalize_image(out[key])
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    torch.testing.assert_close(out["disparity"], plain["disparity"], rtol=0, atol=0)


@pytest.mark.parametrize("options, message", [({"scale": [0.5]}, "augment.scale"), ({"stretch": 2.0}, "augment.stretch"),
                                              ({"occlusion": 1.5}, "augment.occlusion"),
                                              ({"grayscale": -0.1}, "augment.grayscale")])
def test_bad_augmentation_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        TrainTransform((16, 32), **options)
