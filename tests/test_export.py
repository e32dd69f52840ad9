"""ONNX export: one file with dynamic height/width matches PyTorch at two input sizes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from inference_checkpoints import write_our_checkpoint  # noqa: E402
from stereo.export import export, example_inputs  # noqa: E402


def test_onnx_export_has_dynamic_size_and_matches_pytorch(tmp_path, capsys):
    checkpoint = write_our_checkpoint(tmp_path / "tiny.ckpt", calibrated=True)
    output = tmp_path / "tiny.onnx"
    difference = export(checkpoint, "onnx", output, verify_sizes=[[256, 256], [256, 320]], tolerance=0.01)
    assert output.is_file() and difference is not None and difference <= 0.01
    assert "256x320: max |disparity difference|" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    dims = [[d if isinstance(d, str) else int(d) for d in i.shape] for i in session.get_inputs()]
    assert dims == [["batch", 3, "height", "width"]] * 2, "height and width must be symbolic"
    # a third size never seen during export or verification runs and has the right shape
    left, right = example_inputs(272, 288)
    disparity, confidence = session.run(None, {"left": left.numpy(), "right": right.numpy()})
    assert disparity.shape == confidence.shape == (1, 272, 288)
    assert np.isfinite(disparity).all()


def test_export_refuses_unknown_format_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="format"):
        export(tmp_path / "x.ckpt", "tflite", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="x.ckpt"):
        export(tmp_path / "x.ckpt", "onnx", tmp_path / "x.onnx")
