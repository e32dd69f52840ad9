"""Checkpoints: the authors' public format (keys/shapes of their released file) and ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from psmnet_reference import authors_keys, random_authors_state, save_authors_checkpoint

from stereo.models import CheckpointError, PSMNet, StereoNetwork, load_model, load_psmnet_checkpoint
from stereo.models.aggregations import BasicAggregation, StackedHourglass
from stereo.models.attention import _AttentionBlock
from stereo.models.build import build_network, model_config as model_config_of_name


@pytest.fixture(scope="module")
def authors_state():
    return random_authors_state(seed=11)


def _ours(key: str) -> str:
    key = key.removeprefix("module.")
    return key if key.startswith("feature_extraction.") else f"aggregation.{key}"


def test_reference_key_list_is_the_authors_514_entries():
    rows = authors_keys()
    assert len(rows) == 514 and all(key.startswith("module.") for key, _, _ in rows)


@pytest.mark.parametrize("attention", [None, {"feature": {"zero_init": False}, "volume": {"zero_init": False},
                                              "hourglass": {"kind": "dot_product", "zero_init": False}}])
def test_authors_checkpoint_round_trip(tmp_path, authors_state, attention):
    path = save_authors_checkpoint(tmp_path / "pretrained_sceneflow.tar", authors_state)
    model = load_psmnet_checkpoint(PSMNet(192, attention=attention), path)
    ours = model.state_dict()
    for key, value in authors_state.items():
        assert torch.equal(ours[_ours(key)], value), key
    # attention blocks (absent from the authors' file) are reset to the identity
    blocks = [m for m in model.modules() if isinstance(m, _AttentionBlock)]
    assert len(blocks) == (0 if attention is None else 5)
    for block in blocks:
        x = torch.randn(1, block.in_channels, 2, 3, 4)
        assert torch.equal(block(x), x)


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path, authors_state):
    state = dict(authors_state)
    del state["module.classif3.2.weight"]
    state["module.extra.weight"] = torch.zeros(3)
    state["module.dres0.0.0.weight"] = torch.zeros(32, 64, 3, 3, 1)
    path = save_authors_checkpoint(tmp_path / "broken.tar", state)
    with pytest.raises(CheckpointError) as info:
        load_psmnet_checkpoint(PSMNet(192), path)
    err = info.value
    message = str(err)
    assert str(path) in message
    assert err.missing == ["aggregation.classif3.2.weight"] and "aggregation.classif3.2.weight" in message
    assert err.unexpected == ["aggregation.extra.weight"] and "aggregation.extra.weight" in message
    assert len(err.mismatched) == 1 and "aggregation.dres0.0.0.weight" in err.mismatched[0]
    assert "(32, 64, 3, 3, 1)" in message and "(32, 64, 3, 3, 3)" in message


def test_basic_model_refuses_stackhourglass_weights(tmp_path, authors_state):
    path = save_authors_checkpoint(tmp_path / "sh.tar", authors_state)
    with pytest.raises(CheckpointError, match="missing keys: aggregation.classify"):
        load_psmnet_checkpoint(PSMNet(192, "basic"), path)


def test_truncated_and_foreign_files_raise_errors_naming_the_file(tmp_path, authors_state):
    good = save_authors_checkpoint(tmp_path / "good.tar", authors_state)
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.tar"
    text.write_text("this is not a checkpoint\n")
    wrong_type = tmp_path / "list.pt"
    torch.save([1, 2, 3], wrong_type)
    no_weights = tmp_path / "no_weights.pt"
    torch.save({"epoch": 3}, no_weights)
    for path, message in ((truncated, "not a PyTorch checkpoint"), (text, "not a PyTorch checkpoint"),
                          (wrong_type, "expected a checkpoint dict"), (no_weights, "no 'state_dict'")):
        with pytest.raises(CheckpointError, match=message) as info:
            load_psmnet_checkpoint(PSMNet(192), path)
        assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="neither a stereo Lightning checkpoint") as info:
        load_model(no_weights)
    assert str(no_weights) in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        load_model(tmp_path / "missing.tar")


def test_pickled_objects_are_refused_by_weights_only(tmp_path):
    path = tmp_path / "code.pt"
    torch.save({"state_dict": {}, "payload": OmegaConf.create({"a": 1})}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects .omegaconf.dictconfig.DictConfig.") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_load_model_reads_authors_checkpoints(tmp_path, authors_state):
    path = save_authors_checkpoint(tmp_path / "authors.tar", authors_state)
    model = load_model(path, max_disp=96)
    assert isinstance(model, StereoNetwork) and not model.training
    assert model.max_disp == 96 and isinstance(model.aggregation, StackedHourglass)
    assert torch.equal(model.state_dict()["aggregation.classif3.2.weight"], authors_state["module.classif3.2.weight"])


def test_load_model_reads_our_lightning_checkpoints(tmp_path):
    model_config = model_config_of_name("ea_psmnet", max_disp=64)
    model_config["attention"][1]["heads"] = 2
    torch.manual_seed(12)
    trained = build_network(model_config)
    for p in trained.parameters():
        p.data.normal_()
    checkpoint = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.0",
        "state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()},
        "hyper_parameters": {"model_config": model_config, "lr": 1e-3},
        "optimizer_states": [], "lr_schedulers": [], "callbacks": {},
    }
    path = tmp_path / "epoch=3.ckpt"
    torch.save(checkpoint, path)
    model = load_model(path)
    assert isinstance(model, StereoNetwork) and not model.training and model.max_disp == 64
    assert model.attention_config[1]["heads"] == 2 and model.aggregation.inserted.dres1.heads == 2
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # a checkpoint whose weights do not fit its own config is rejected with the keys listed
    del checkpoint["state_dict"]["model.aggregation.inserted.dres1.values.weight"]
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="missing keys: aggregation.inserted.dres1.values.weight"):
        load_model(path)


@pytest.mark.slow
def test_weights_export_is_a_compact_checkpoint_that_loads_everywhere(tmp_path, capsys):
    """format=weights: config + fp16 weights, half the size, loaded by load_model like a training checkpoint,
    and its disparities verified against the source model (the export fails above the tolerance)."""
    from inference_checkpoints import write_our_checkpoint

    from stereo.export import export

    source = write_our_checkpoint(tmp_path / "tiny.ckpt", calibrated=True)
    output = tmp_path / "tiny-weights.ckpt"
    difference = export(source, "weights", output, verify_sizes=[[256, 256]], tolerance_factor=10)
    assert difference is not None and difference <= 1
    assert "disparity: |error vs float64| mean" in capsys.readouterr().out
    assert output.stat().st_size < 0.6 * source.stat().st_size
    stored = torch.load(output, weights_only=True)
    assert {v.dtype for v in stored["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    original, compact = load_model(source), load_model(output)
    assert type(compact) is type(original) and compact.max_disp == original.max_disp
    assert all(p.dtype == torch.float32 for p in compact.parameters())
    for (name, a), (_, b) in zip(original.state_dict().items(), compact.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)


# --- checkpoints are data, never code ---------------------------------------------------------------


@pytest.mark.parametrize("attack", ["builtins.open", "os.system", "subprocess.run", "torch.load", "nested attention",
                                    "component target", "component setting", "insertion setting"])
def test_hostile_model_configs_run_nothing_and_name_the_file(tmp_path, attack):
    from hostile_checkpoints import hostile_configs, make_victim, untouched, write_hostile_checkpoint

    victim, marker, payload = make_victim(tmp_path)
    path = write_hostile_checkpoint(tmp_path / "hostile.ckpt", hostile_configs(victim, marker, payload)[attack])
    with pytest.raises(CheckpointError, match="hostile.ckpt") as error:
        load_model(path)
    assert "\n" not in str(error.value)
    assert untouched(victim, marker)


def test_pickled_payload_file_is_refused_without_suggesting_weights_only_false(tmp_path):
    from hostile_checkpoints import make_victim, untouched

    victim, marker, payload = make_victim(tmp_path)
    with pytest.raises(CheckpointError, match="payload.pt: refused, the file holds pickled Python objects") as error:
        load_model(payload)
    assert "weights_only" not in str(error.value) and untouched(victim, marker)


def test_random_bytes_are_reported_as_not_a_checkpoint(tmp_path):
    path = tmp_path / "random.ckpt"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(CheckpointError, match="random.ckpt: not a PyTorch checkpoint") as error:
        load_model(path)
    assert "weights_only" not in str(error.value)


def test_legacy_speed_options_are_ignored_and_unknown_keys_refused(tmp_path):
    from inference_checkpoints import write_our_checkpoint

    legacy = {"_target_": "stereo.models.psmnet.PSMNet", "max_disp": 32, "aggregation": "basic",
              "channels_last": True, "checkpoint_aggregation": True, "checkpoint_features": False,
              "regression_chunk_rows": 8}
    model = load_model(write_our_checkpoint(tmp_path / "legacy.ckpt", config=legacy_free(legacy)))
    checkpoint = torch.load(tmp_path / "legacy.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model_config"] = legacy
    torch.save(checkpoint, tmp_path / "legacy.ckpt")
    loaded = load_model(tmp_path / "legacy.ckpt")
    assert loaded.max_disp == 32 and isinstance(loaded.aggregation, BasicAggregation)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    for bad, message in (({"max_disp": "32"}, "model_config.max_disp = '32' has the wrong type"),
                         ({"max_disp": True}, "model_config.max_disp = True has the wrong type"),
                         ({"dropout": 0.5}, "unknown key 'dropout'"),
                         ({"max_disp": 30}, "max_disp must be a positive multiple of 16"),
                         ({"attention": {"feature": {"kind": "efficient", "heads": [1]}}}, "heads must be a positive integer"),
                         ({"attention": {"feature": {"kind": "efficient", "_target_": "os.system"}}}, "key ._target_. is not allowed")):
        checkpoint["hyper_parameters"]["model_config"] = {**legacy, **bad}
        torch.save(checkpoint, tmp_path / "bad.ckpt")
        with pytest.raises(CheckpointError, match=f"bad.ckpt: .*({message})"):
            load_model(tmp_path / "bad.ckpt")


def legacy_free(config: dict) -> dict:
    from stereo.models.checkpoints import LEGACY_SPEED_OPTIONS

    return {k: v for k, v in config.items() if k not in LEGACY_SPEED_OPTIONS}


LEGACY = Path(__file__).parent / "data" / "legacy_checkpoints"


def _legacy_pair(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed input the fixtures' disparities were recorded on (closed form: no RNG involved)."""
    y = torch.arange(height, dtype=torch.float64).view(height, 1)
    x = torch.arange(width, dtype=torch.float64).view(1, width)
    channels = [torch.sin(0.31 * x + 0.17 * y + c) + 0.5 * torch.cos(0.07 * x * (c + 1) - 0.11 * y) for c in range(3)]
    left = torch.stack(channels).unsqueeze(0)
    return left.float(), torch.roll(left, shifts=-5, dims=3).float()


@pytest.mark.parametrize("name", sorted(p.stem for p in LEGACY.glob("*.ckpt")))
def test_checkpoints_written_before_the_component_network_load_and_give_their_disparities(name):
    """Every model config's checkpoint as the code of ``outputs.json``'s commit wrote it (max_disp 16;
    every tensor a strided view of one small fp16 storage, so the file stays ~90 KB) loads and gives
    the disparities recorded then. Same function, so only float32 rounding of reordered sums may
    differ: disparities are soft-argmaxes over 16 levels, 1e-3 px is ~100x that rounding."""
    records = json.loads((LEGACY / "outputs.json").read_text())
    recorded = records["models"][name]
    model = load_model(LEGACY / f"{name}.ckpt")
    left, right = _legacy_pair(*records["size"])
    with torch.no_grad():
        disparity = model(left, right)[0].double()
    samples = disparity[records["rows"], records["cols"]]
    assert torch.allclose(samples, torch.tensor(recorded["samples"], dtype=torch.float64), rtol=0, atol=1e-3)
    assert disparity.mean().item() == pytest.approx(recorded["mean"], abs=1e-3)
