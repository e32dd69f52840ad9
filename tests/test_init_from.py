"""init_from: a new run starts from the weights of our .ckpt, an exported weights file or an authors' .tar."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose
from inference_checkpoints import calibrate_batchnorm

from stereo.evaluation.runner import build_eval_dataset, evaluate_model
from stereo.models import PSMNet
from stereo.models.build import build_network
from stereo.models.checkpoints import load_psmnet_checkpoint, save_weights
from stereo.train import train
from stereo.training.init_from import init_from_weights

ATTENTION = {"feature": {"kind": "efficient", "key_channels": 64, "value_channels": 128},
             "volume": {"kind": "efficient", "key_channels": 16, "value_channels": 32}}


def _authors_name(key: str) -> str:
    """The authors' DataParallel name of one of our keys (the inverse of checkpoints._authors_key)."""
    return "module." + (key if key.startswith("feature_extraction.") else key.removeprefix("aggregation."))


def _trained_like(seed: int, aggregation: str = "stackhourglass", **kwargs) -> PSMNet:
    """A PSMNet with BN statistics from one pass, so its outputs are as well-conditioned as a trained one's."""
    torch.manual_seed(seed)
    return calibrate_batchnorm(PSMNet(max_disp=32, aggregation=aggregation, **kwargs))


def write_authors(path: Path, model: PSMNet) -> Path:
    torch.save({"epoch": 10, "state_dict": {_authors_name(k): v for k, v in model.state_dict().items()},
                "train_loss": 0.5}, path)
    return path


def write_lightning(path: Path, model: PSMNet, config: dict) -> Path:
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_config": config}, "epoch": 3, "global_step": 7}, path)
    return path


def _assert_loaded(model: torch.nn.Module, source: torch.nn.Module, half: bool = False) -> None:
    for (key, value), (_, expected) in zip(model.state_dict().items(), source.state_dict().items(), strict=True):
        if half and expected.is_floating_point():
            expected = expected.half().to(expected.dtype)  # what an fp16 export keeps, exactly
        assert torch.equal(value, expected), key


@pytest.mark.parametrize("source", ["lightning", "export", "authors"])
def test_weights_from_each_source_are_copied_exactly(source, tmp_path):
    original = _trained_like(seed=1, aggregation="basic")
    config = {"_target_": "stereo.models.PSMNet", "max_disp": 32, "aggregation": "basic"}
    path = {"lightning": lambda p: write_lightning(p, original, config),
            "export": lambda p: (save_weights(original, p), p)[1],
            "authors": lambda p: write_authors(p, original)}[source](tmp_path / "weights.file")
    torch.manual_seed(2)
    model = PSMNet(max_disp=32, aggregation="basic")
    report = init_from_weights(model, path)
    assert report.exact and report.loaded == len(model.state_dict())
    assert report.source == ("authors" if source == "authors" else "lightning")
    _assert_loaded(model, original, half=source == "export")


@pytest.mark.slow  # 2-2.5 s on 2 cores (the quick tier's budget is 2 minutes)
def test_ea_psmnet_from_authors_psmnet_is_refused_strictly_and_equals_psmnet_otherwise(tmp_path):
    psmnet = _trained_like(seed=3)
    path = write_authors(tmp_path / "pretrained_sceneflow.tar", psmnet)
    torch.manual_seed(4)
    ea_psmnet = PSMNet(max_disp=32, attention=ATTENTION)
    with pytest.raises(ValueError, match="pretrained_sceneflow.tar") as refused:
        init_from_weights(ea_psmnet, path)
    message = str(refused.value)
    assert "feature_extraction.inserted (" in message and "aggregation.inserted (" in message
    assert "init_strict=false" in message

    report = init_from_weights(ea_psmnet, path, strict=False)
    assert not report.unexpected and not report.mismatched
    assert {k.split(".")[2] for k in report.missing} == {"layer4", "dres1"}
    reference = load_psmnet_checkpoint(PSMNet(max_disp=32), path).eval()
    left = torch.nn.functional.avg_pool2d(torch.randn(1, 3, 258, 258), 3, stride=1)
    right = torch.roll(left, -4, dims=3)
    with torch.no_grad():
        # zero-initialised reprojection: each attention block adds exactly 0, so the results are identical
        assert torch.equal(ea_psmnet.eval()(left, right), reference(left, right))


def test_a_file_sharing_no_tensor_with_the_model_is_refused_even_when_not_strict(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.head.weight": torch.zeros(3)}}, path)
    with pytest.raises(ValueError, match="other.ckpt.*no tensor of the file fits"):
        init_from_weights(PSMNet(max_disp=16, aggregation="basic"), path, strict=False)
    with pytest.raises(FileNotFoundError, match="absent.tar"):
        init_from_weights(PSMNet(max_disp=16, aggregation="basic"), tmp_path / "absent.tar")


def _untrained_epe(cfg, model: torch.nn.Module, out_dir: Path) -> float:
    dataset = build_eval_dataset(cfg.data, str(cfg.eval.split))
    return float(evaluate_model(model.eval(), dataset, str(cfg.eval.protocol), out_dir, export={"max_images": 0},
                                device=torch.device("cpu"))["epe"])


@pytest.mark.slow
@pytest.mark.parametrize("source", ["lightning", "export", "authors"])
def test_stereo_train_starts_from_each_source(source, train_overrides, tmp_path):
    """The real stereo.train: evaluate_before scores the network init_from built, before any step.

    EA-PSMNet from the authors' PSMNet file (init_strict=false) must score exactly what PSMNet scores.
    """
    psmnet = _trained_like(seed=5)
    config = {"_target_": "stereo.models.PSMNet", "max_disp": 32, "aggregation": "stackhourglass"}
    expected_state = psmnet.state_dict()
    if source == "lightning":
        path, model_overrides = write_lightning(tmp_path / "run.ckpt", psmnet, config), ["model=psmnet"]
    elif source == "export":
        save_weights(psmnet, tmp_path / "model.pt")
        path, model_overrides = tmp_path / "model.pt", ["model=psmnet"]
        expected_state = {k: v.half().to(v.dtype) if v.is_floating_point() else v for k, v in expected_state.items()}
    else:
        path, model_overrides = write_authors(tmp_path / "authors.tar", psmnet), ["model=ea_psmnet", "init_strict=false"]
    # the reference is built from the same config group (same layout options), so the arithmetic is the same
    reference = build_network(compose("train", train_overrides("model=psmnet")).model)
    reference.load_state_dict(expected_state)
    cfg = compose("train", train_overrides(*model_overrides, f"init_from={path}", "evaluate_before=true",
                                           "debug=fast_dev_run"))
    results = train(cfg)
    assert results["global_step"] == 1
    assert results["untrained/epe"] == pytest.approx(_untrained_epe(cfg, reference, tmp_path / "reference"), abs=1e-9)


def test_stereo_train_refuses_a_mismatch_and_init_from_with_resume(train_overrides, tmp_path):
    path = write_authors(tmp_path / "authors.tar", PSMNet(max_disp=32))
    with pytest.raises(ValueError, match="(?s)authors.tar.*missing from the file.*feature_extraction.inserted"):
        train(compose("train", train_overrides("model=ea_psmnet", f"init_from={path}")))
    resume = write_lightning(tmp_path / "last.ckpt", PSMNet(max_disp=32), {})
    torch.save({**torch.load(resume), "loops": {}, "optimizer_states": []}, resume)
    with pytest.raises(ValueError, match="init_from=... and ckpt_path=... together"):
        train(compose("train", train_overrides("model=psmnet", f"init_from={path}", f"ckpt_path={resume}")))


@pytest.mark.parametrize("part, added, new_prefix", [
    ("aggregation", {"blocks": 2, "zero_init_residuals": True}, "aggregation.residuals.1."),
    ("aggregation", {"context_blocks": 1, "zero_init_residuals": True}, "aggregation.context.0."),
    ("refinement", {"detail_channels": 4}, "refinement.detail.")])
def test_a_census_network_given_zero_initialised_blocks_starts_as_the_trained_network(tmp_path, part, added,
                                                                                       new_prefix):
    """init_from with init_strict=false into EA-Census with a second residual 3-D block, a block through
    1/16 (zero_init_residuals), or the refinement's full-resolution step: every tensor of the file is
    copied, the new part starts as the identity, so the new network computes exactly what the file's
    network computes (the new block adds a hard 0)."""
    from inference_checkpoints import write_our_checkpoint

    from stereo.models.build import model_config

    config = model_config("ea_census", max_disp=32)
    path = write_our_checkpoint(tmp_path / "trained.ckpt", config, seed=5, calibrated=True)
    deeper = dict(config, **{part: {**config[part], **added}})
    torch.manual_seed(6)
    model = build_network(deeper)
    report = init_from_weights(model, path, strict=False)
    assert report.missing and all(key.startswith(new_prefix) for key in report.missing), report.missing
    trained = build_network(config)
    init_from_weights(trained, path)
    left, right = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(left, right), trained.eval()(left, right), rtol=0, atol=0)


def test_the_resume_line_of_a_run_started_from_weights_resumes_it_instead_of_refusing(tmp_path):
    """A recipe that starts from weights (experiment=ea_census_cpu_context sets init_from) prints a
    resume line that stereo.train accepts: ckpt_path and init_from together are refused, so the line
    sets init_from=null (the resumed run takes its weights from the checkpoint)."""
    import shlex
    from types import SimpleNamespace

    from stereo.train import report

    cfg = compose("train", ["experiment=ea_census_cpu_context", f"paths.output_dir={tmp_path}"])
    assert cfg.init_from == "ea_census_stage6"
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    text = report(cfg, {"global_step": 250, "train/seconds": 1.0, "resume_checkpoint": str(checkpoint)},
                  SimpleNamespace(loggers=[]))
    args = shlex.split(text.split("resume with:")[1].splitlines()[0])
    assert args[:3] == ["python", "-m", "stereo.train"] and args[-1] == "init_from=null", args
    resumed = compose("train", ["experiment=ea_census_cpu_context", f"paths.output_dir={tmp_path}",
                                *(a for a in args[3:] if not a.startswith("hydra.run.dir="))])
    assert resumed.init_from is None and resumed.ckpt_path == str(checkpoint.resolve())
    # ... and the run folder's guard takes it for the same producer: the folder's record of the weights it
    # started from stands for init_from=null (without that record the weights differ: "none now")
    import json

    from stereo.output_dirs import differences
    from stereo.train import training_producer

    original = training_producer(cfg)
    assert differences(original, training_producer(resumed, checkpoint))
    (tmp_path / "manifest.json").write_text(json.dumps({**original, "status": "failed"}))
    assert differences(original, training_producer(resumed, checkpoint)) == []
