"""Export a trained network to ONNX (dynamic batch, height and width), TorchScript or a compact
weights file (model config + fp16 weights, ~half a training checkpoint's size), then verify it.

``python -m stereo.export ckpt_path=... format=onnx output=psmnet.onnx`` (config ``conf/export.yaml``).

The exported graph takes what the network takes: ImageNet-normalised ``left``/``right`` float32
N×3×H×W with H and W multiples of 16 (pad with ``stereo.models.padding.Padder``, top_right) and returns
``disparity`` and ``confidence`` (N×H×W). ONNX uses PyTorch's TorchScript-based exporter
(``dynamo=False``): it needs only ``onnx``, while the torch.export-based default would also need
``onnxscript``. After writing, the file is run (onnxruntime / torch.jit.load) on random inputs of
several sizes next to PyTorch, and the export fails when the max abs difference exceeds ``tolerance``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from stereo.config import CONFIG_DIR
from stereo.models.checkpoints import save_weights

FORMATS = ("onnx", "torchscript", "weights")
INPUT_NAMES = ("left", "right")
OUTPUT_NAMES = ("disparity", "confidence")


class ExportError(RuntimeError):
    """The exported model is missing or disagrees with PyTorch beyond the tolerance."""


class DisparityAndConfidence(torch.nn.Module):
    """Fixes the traced signature: two normalised images in, (disparity, confidence) out."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(left, right, return_confidence=True)


def example_inputs(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible normalised pair: right = left shifted by 4 px plus noise (a real match exists)."""
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(1, 3, height, width, generator=generator)
    right = torch.roll(left, shifts=-4, dims=3) + 0.1 * torch.randn(1, 3, height, width, generator=generator)
    return left, right


def export_onnx(module: torch.nn.Module, path: Path, opset: int = 17, size: tuple[int, int] = (256, 256)) -> None:
    dynamic = {0: "batch", 2: "height", 3: "width"}
    dynamic_out = {0: "batch", 1: "height", 2: "width"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            example_inputs(*size),
            str(path),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={**{n: dynamic for n in INPUT_NAMES}, **{n: dynamic_out for n in OUTPUT_NAMES}},
            opset_version=opset,
        )


def export_torchscript(module: torch.nn.Module, path: Path, size: tuple[int, int] = (256, 256)) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example_inputs(*size), check_trace=False)
    torch.jit.save(traced, str(path))


def exported_runner(path: Path, fmt: str):
    """A callable (left, right numpy) -> (disparity, confidence) numpy running the exported file."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda left, right: session.run(list(OUTPUT_NAMES), {"left": left, "right": right})
    if fmt == "weights":
        from stereo.inference.predictor import Predictor

        loaded = DisparityAndConfidence(Predictor.from_checkpoint(path, device="cpu", optimize=False).model).eval()
    else:
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(left: np.ndarray, right: np.ndarray):
        with torch.inference_mode():
            return [t.numpy() for t in loaded(torch.from_numpy(left), torch.from_numpy(right))]

    return run


def verify(module: torch.nn.Module, path: Path, fmt: str, sizes: Sequence[Sequence[int]], tolerance: float) -> float:
    """Worst abs disparity difference exported-vs-PyTorch over ``sizes``; raises above ``tolerance``.

    Graph formats must agree everywhere (max over pixels). fp16 weights are held to the mean over
    pixels: on the random verification inputs some pixels' distributions are near ties, and the
    rounding of the weights moves those soft-argmaxes by pixels while the mean moves by ~0.01 px.
    """
    statistic = np.mean if fmt == "weights" else np.max
    run = exported_runner(path, fmt)
    worst = 0.0
    for index, (height, width) in enumerate(sizes):
        left, right = example_inputs(int(height), int(width), seed=index + 1)
        with torch.inference_mode():
            expected = [t.numpy() for t in module(left, right)]
        actual = run(left.numpy(), right.numpy())
        for name, e, a in zip(OUTPUT_NAMES, expected, actual):
            if e.shape != a.shape:
                raise ExportError(f"{path}: {name} has shape {a.shape} at input {height}x{width}, PyTorch gives {e.shape}")
        difference = float(statistic(np.abs(expected[0] - actual[0])))
        print(f"  {height}x{width}: {statistic.__name__} |disparity difference| = {difference:.3g} px")
        worst = max(worst, difference)
    if not worst <= tolerance:
        raise ExportError(f"{path}: exported model differs from PyTorch by {worst:.3g} px "
                          f"({statistic.__name__} over pixels; tolerance {tolerance})")
    return worst


def export(
    ckpt_path: str | Path,
    fmt: str,
    output: str | Path,
    max_disp: int | None = None,
    opset: int = 17,
    verify_sizes: Sequence[Sequence[int]] = ((256, 256), (256, 320)),
    tolerance: float = 1e-2,
    check: bool = True,
) -> float | None:
    """Export a checkpoint; returns the verified max abs difference (None when not verified)."""
    from stereo.inference.predictor import Predictor

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    # the plain network: the ONNX exporter has no memory-format support for the channels-last copy
    predictor = Predictor.from_checkpoint(ckpt_path, device="cpu", max_disp=max_disp, optimize=False)
    module = DisparityAndConfidence(predictor.model).eval()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    try:
        if fmt == "onnx":
            export_onnx(module, temporary, opset, tuple(verify_sizes[0]))
        elif fmt == "weights":
            save_weights(predictor.model, temporary)
        else:
            export_torchscript(module, temporary, tuple(verify_sizes[0]))
        difference = verify(module, temporary, fmt, verify_sizes, tolerance) if check else None
        temporary.replace(output)  # only a verified file gets the requested name
    finally:
        temporary.unlink(missing_ok=True)
    print(f"wrote {output} ({fmt}, max_disp {predictor.max_disp}, {output.stat().st_size / 1e6:.1f} MB)")
    return difference


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg.ckpt_path, cfg.format, cfg.output, cfg.max_disp, cfg.opset,
           [list(s) for s in cfg.verify_sizes], float(cfg.tolerance), bool(cfg.verify))


if __name__ == "__main__":
    main()
