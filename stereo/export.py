"""Export a trained network to ONNX (dynamic batch, height and width), TorchScript or a compact
weights file (model config + fp16 weights, ~half a training checkpoint's size), then verify it.

``python -m stereo.export ckpt_path=... format=onnx output=psmnet.onnx`` (config ``conf/export.yaml``).

The exported graph takes what the network takes: ImageNet-normalised ``left``/``right`` float32
N×3×H×W with H and W multiples of 16 (pad with ``stereo.models.padding.Padder``, top_right) and returns
``disparity`` and ``confidence`` (N×H×W). ONNX uses PyTorch's TorchScript-based exporter
(``dynamo=False``): it needs only ``onnx``, while the torch.export-based default would also need
``onnxscript``. After writing, the file is verified (see :func:`verify`) and only a verified file gets
the requested name.

Verification criterion. The exported graph computes the same function as PyTorch in float32, with
its own order of operations, so neither is exact: the reference is the same network run by PyTorch
in float64. On random inputs of each ``verify_sizes`` size, the error of the exported output against
that reference must stay within ``tolerance_factor`` times PyTorch float32's own error against it,
plus a rounding floor, for the mean and the 99th percentile over pixels:

    stat(|exported − float64|) <= tolerance_factor · stat(|PyTorch float32 − float64|) + floor

The floor is the float32 rounding bound of the final soft-argmax sum (D terms of size up to D,
D = max_disp): D²·u px for disparity and D·u for confidence, u = 2⁻²⁴. The maximum over pixels is
not held to this rule: at near-tie pixels the soft-argmax amplifies rounding, so two correct float32
implementations can differ there by far more than their typical error, while a wrong graph
(a changed weight, a wrong operator) moves the mean and the bulk of the distribution by orders of
magnitude. ``weights`` files are checked the same way against the network with its weights rounded
to float16 (what the file stores by design).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from stereo import output_dirs
from stereo.cli import OutputDirError, UserError, command
from stereo.models.checkpoints import save_weights
from stereo.models.pretrained import resolve_checkpoint

FORMATS = ("onnx", "torchscript", "weights")
INPUT_NAMES = ("left", "right")
OUTPUT_NAMES = ("disparity", "confidence")
UNIT_ROUNDOFF = 2.0**-24  # float32
STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda error: float(np.mean(error)),
    "p99": lambda error: float(np.percentile(error, 99)),
}


class ExportError(UserError):
    """The exported file disagrees with the network beyond the verification criterion."""


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


def rounding_floors(max_disp: int) -> dict[str, float]:
    """float32 rounding bound of the soft-argmax sum: D terms up to D px (disparity), up to 1 (confidence)."""
    return {"disparity": max_disp * max_disp * UNIT_ROUNDOFF, "confidence": max_disp * UNIT_ROUNDOFF}


def fp16_rounded(module: torch.nn.Module) -> torch.nn.Module:
    """A copy whose floating tensors went through float16, as a ``weights`` file stores them."""
    rounded = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return rounded.eval()


def verify(module: torch.nn.Module, path: Path, fmt: str, sizes: Sequence[Sequence[int]], max_disp: int,
           tolerance_factor: float = 10.0, name: str | None = None) -> float:
    """Check the exported file against a float64 PyTorch reference (criterion: module docstring).

    Returns the largest measured/bound ratio over sizes, outputs and statistics (<= 1 passes);
    raises ``ExportError`` naming the file (``name``, default ``path``), the size, the output and
    the statistic otherwise.
    """
    name = name or str(path)
    module = fp16_rounded(module) if fmt == "weights" else module
    exact = copy.deepcopy(module).double().eval()
    floors = rounding_floors(max_disp)
    run = exported_runner(path, fmt)
    worst = 0.0
    for index, (height, width) in enumerate(sizes):
        left, right = example_inputs(int(height), int(width), seed=index + 1)
        with torch.inference_mode():
            expected = [t.numpy() for t in module(left, right)]
            reference = [t.numpy() for t in exact(left.double(), right.double())]
        actual = [np.asarray(a) for a in run(left.numpy(), right.numpy())]
        for output, e, r, a in zip(OUTPUT_NAMES, expected, reference, actual):
            if e.shape != a.shape:
                raise ExportError(f"{name}: {output} has shape {a.shape} at input {height}x{width}, PyTorch gives {e.shape}")
            if not np.isfinite(a).all():
                raise ExportError(f"{name}: {output} has non-finite values at input {height}x{width}")
            exported_error, torch_error = np.abs(a - r), np.abs(e - r)
            parts = []
            for statistic, reduce in STATISTICS.items():
                measured = reduce(exported_error)
                bound = tolerance_factor * reduce(torch_error) + floors[output]
                parts.append(f"{statistic} {measured:.2g} (bound {bound:.2g})")
                if not measured <= bound:
                    raise ExportError(
                        f"{name}: exported {output} disagrees with the network at input {height}x{width}: "
                        f"{statistic} error vs float64 {measured:.3g} > {tolerance_factor:g} x PyTorch float32's "
                        f"{reduce(torch_error):.3g} + {floors[output]:.2g}; the exported graph is wrong"
                    )
                worst = max(worst, measured / bound)
            print(f"  {height}x{width} {output}: |error vs float64| " + ", ".join(parts))
    return worst


def check_sizes(sizes: object, min_size: int = 1) -> list[list[int]]:
    """``verify_sizes`` as a list of [height, width]: at least one, whole numbers of at least
    ``min_size`` (the network's ``input_spec.min_size``, checked again once it is loaded; an empty
    list would skip the verification that ``verify=true`` promises, and leave no trace size)."""
    from omegaconf import OmegaConf

    sizes = OmegaConf.to_container(sizes) if OmegaConf.is_config(sizes) else sizes
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ValueError(f"verify_sizes={sizes}: give a list of [height, width] (the first is also the trace size), e.g. "
                         "verify_sizes=[[256,256]]; verify=false skips the verification")
    for size in sizes:
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < min_size for v in size)):
            raise ValueError(f"verify_sizes: {size} is not [height, width], two whole numbers of at least {min_size}")
    return [list(size) for size in sizes]


def export(
    ckpt_path: str | Path,
    fmt: str,
    output: str | Path,
    max_disp: int | None = None,
    opset: int = 17,
    verify_sizes: Sequence[Sequence[int]] = ((256, 256), (256, 320)),
    tolerance_factor: float = 10.0,
    check: bool = True,
    overwrite: bool = False,
    regression_window: int | None = None,
) -> float | None:
    """Export a checkpoint; returns the worst measured/bound ratio of the verification (None when not verified).

    ``output`` is replaced only when its manifest (``<output>.manifest.json``) says an export of the same
    checkpoint and settings wrote it, or with ``overwrite``: an unrelated file there is refused.
    ``regression_window`` (None: the checkpoint's) sets the eval-mode window of a low-resolution
    soft-argmax (``StereoNetwork.regression_window``), which the weights file then records."""
    from stereo.inference.predictor import Predictor

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    verify_sizes = check_sizes(verify_sizes)
    if isinstance(tolerance_factor, bool) or not isinstance(tolerance_factor, (int, float)) or not 0 < tolerance_factor < float("inf"):
        raise ValueError(f"tolerance_factor={tolerance_factor}: must be a positive number (the exported error may be at "
                         "most this many times PyTorch float32's own)")
    output = Path(output)
    if output.is_dir():
        raise OutputDirError(f"output={output} is a folder; give the file to write, e.g. output={output / ('model.' + fmt)}")
    # the plain network: the ONNX exporter has no memory-format support for the channels-last copy
    ckpt_path = resolve_checkpoint(ckpt_path)
    predictor = Predictor.from_checkpoint(ckpt_path, device="cpu", max_disp=max_disp, optimize=False)
    network = predictor.network()  # at the requested max_disp (the loaded network is not changed)
    if regression_window is not None:
        network.regression_window = regression_window
    check_sizes(verify_sizes, network.input_spec.min_size)
    module = DisparityAndConfidence(network).eval()
    made_by = output_dirs.producer("stereo.export", ckpt_path, {
        "format": fmt, "max_disp": predictor.max_disp, "regression_window": network.regression_window,
        "opset": opset, "verify": check,
        "verify_sizes": [list(size) for size in verify_sizes], "tolerance_factor": tolerance_factor})
    with output_dirs.open_run(output, "output", made_by, overwrite=overwrite, is_file=True):
        temporary = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # per process; a dead one's is removed
        try:
            if fmt == "onnx":
                export_onnx(module, temporary, opset, tuple(verify_sizes[0]))
            elif fmt == "weights":
                save_weights(network, temporary)
            else:
                export_torchscript(module, temporary, tuple(verify_sizes[0]))
            difference = (verify(module, temporary, fmt, verify_sizes, predictor.max_disp, tolerance_factor,
                                 name=f"{output} (not written)") if check else None)
            temporary.replace(output)  # only a verified file gets the requested name
        finally:
            temporary.unlink(missing_ok=True)
    print(f"wrote {output} ({fmt}, max_disp {predictor.max_disp}, {output.stat().st_size / 1e6:.1f} MB)")
    return difference


@command("export")
def main(cfg: DictConfig) -> None:
    export(cfg.ckpt_path, cfg.format, cfg.output, cfg.max_disp, cfg.opset,
           cfg.verify_sizes, float(cfg.tolerance_factor), bool(cfg.verify),
           bool(cfg.get("overwrite", False)), cfg.get("regression_window"))


if __name__ == "__main__":
    main()
