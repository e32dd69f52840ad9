"""Export: one ONNX file with dynamic height/width, verified against a float64 PyTorch reference.

The verification must pass every correct export (including the authors' architecture with BatchNorm
statistics from a real image) and must catch a wrong graph (a perturbed weight, a wrong operator).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from stereo.export import DisparityAndConfidence, ExportError, example_inputs, export, verify  # noqa: E402
from stereo.models import PSMNet, load_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, calibrated_checkpoint):
    """A verified export of a tiny network with calibrated BatchNorm, and that network."""
    output = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    ratio = export(calibrated_checkpoint, "onnx", output, verify_sizes=[[256, 320]])
    return output, DisparityAndConfidence(load_model(calibrated_checkpoint)).eval(), ratio


@pytest.mark.slow
def test_onnx_export_has_dynamic_size_and_passes_verification(tiny_onnx, capsys):
    output, _, ratio = tiny_onnx
    assert output.is_file() and ratio is not None and 0 < ratio <= 1
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    dims = [[d if isinstance(d, str) else int(d) for d in i.shape] for i in session.get_inputs()]
    assert dims == [["batch", 3, "height", "width"]] * 2, "height and width must be symbolic"
    # a third size never seen during export or verification runs and has the right shape
    left, right = example_inputs(272, 288)
    disparity, confidence = session.run(None, {"left": left.numpy(), "right": right.numpy()})
    assert disparity.shape == confidence.shape == (1, 272, 288)
    assert np.isfinite(disparity).all()


def _rewrite(source, target, change) -> None:
    model = onnx.load(str(source))
    change(model)
    onnx.save(model, str(target))


@pytest.mark.slow
def test_a_perturbed_weight_in_the_onnx_file_is_caught(tiny_onnx, tmp_path):
    output, module, _ = tiny_onnx

    def perturb(model):  # one 3-D convolution weight of the aggregation head, scaled by 1.01
        initializer = next(i for i in model.graph.initializer if "aggregation" in i.name and len(i.dims) == 5)
        weights = onnx.numpy_helper.to_array(initializer) * np.float32(1.01)
        initializer.CopyFrom(onnx.numpy_helper.from_array(weights, initializer.name))

    broken = tmp_path / "broken.onnx"
    _rewrite(output, broken, perturb)
    with pytest.raises(ExportError, match="broken.onnx: exported disparity disagrees.*the exported graph is wrong"):
        verify(module, broken, "onnx", [[256, 256]], max_disp=32)


@pytest.mark.slow
def test_a_wrong_operator_in_the_onnx_file_is_caught(tiny_onnx, tmp_path):
    output, module, _ = tiny_onnx

    def wrong_op(model):  # the first ReLU becomes an identity
        node = next(n for n in model.graph.node if n.op_type == "Relu")
        node.op_type = "Identity"

    broken = tmp_path / "wrong-op.onnx"
    _rewrite(output, broken, wrong_op)
    with pytest.raises(ExportError, match="wrong-op.onnx"):
        verify(module, broken, "onnx", [[256, 256]], max_disp=32)


@pytest.mark.slow
def test_authors_architecture_with_real_image_batchnorm_exports_by_default(real_data_dir, tmp_path):
    """The authors' network (stackhourglass, max_disp 192, their init) with BatchNorm statistics from a
    real KITTI pair: a correct export must pass the default verification."""
    from stereo.data.io import read_image
    from stereo.data.normalize import normalize_image

    scene = real_data_dir / "kitti2015" / "000046_10" / "training"
    if not scene.is_dir():
        pytest.skip(f"{scene} not available")
    left, right = (normalize_image(read_image(scene / f"image_{i}" / "000046_10.png"))[None, :, :256, :512]
                   for i in (2, 3))
    torch.manual_seed(0)
    model = PSMNet(max_disp=192)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative: the statistics of this one real pair
    with torch.no_grad():
        model.train()(left, right)
    checkpoint = tmp_path / "authors-arch.ckpt"
    torch.save({"hyper_parameters": {"model_config": model.config},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    ratio = export(checkpoint, "onnx", tmp_path / "authors.onnx", verify_sizes=[[256, 256]])
    assert ratio is not None and ratio <= 1


def test_export_refuses_unknown_format_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="format"):
        export(tmp_path / "x.ckpt", "tflite", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="x.ckpt"):
        export(tmp_path / "x.ckpt", "onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
