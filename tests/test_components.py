"""The network as components: cost volumes against their definitions, channels flowing from one
component to the next, attention inserted by name, hooks, device placement, and a researcher's new
cost volume and aggregation (one file + one YAML each) training and running optimised without other
edits."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import MODEL_CONFIGS, compose
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from stereo.models import StereoNetwork
from stereo.models.build import build_network, model_config
from stereo.models.cost_volumes import CorrelationVolume, GroupCorrelationVolume
from stereo.training.losses import PSMNetLoss

MODELS_DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _gwc_definition(left: torch.Tensor, right: torch.Tensor, levels: int, groups: int) -> torch.Tensor:
    """GwcNet's definition, element by element in float64: C_gwc(g, d, y, x) = (N_g / C) ·
    <f_l^g(y, x), f_r^g(y, x - d)>, zero where x - d < 0."""
    left, right = left.double(), right.double()
    batch, channels, height, width = left.shape
    per_group = channels // groups
    volume = torch.zeros(batch, groups, levels, height, width, dtype=torch.float64)
    for g in range(groups):
        members = slice(g * per_group, (g + 1) * per_group)
        for d in range(levels):
            for x in range(d, width):
                volume[:, g, d, :, x] = (left[:, members, :, x] * right[:, members, :, x - d]).sum(1) / per_group
    return volume


@pytest.mark.parametrize("groups,levels", [(4, 6), (1, 5), (8, 12)])  # 12 levels > 10 columns: all-zero levels
def test_group_correlation_volume_equals_the_gwcnet_definition_in_float64(groups, levels):
    gen = torch.Generator().manual_seed(0)
    left, right = torch.randn(2, 2, 16, 3, 10, generator=gen).unbind(0)  # batch 2, 16 channels, 3×10
    ours = GroupCorrelationVolume(16, levels, groups=groups)(left, right)
    expected = _gwc_definition(left, right, levels, groups)
    assert ours.shape == (2, groups, levels, 3, 10) and ours.dtype == torch.float32
    # float32 mean of 16/groups products of unit normals: a few float32 ulps of values of order 1
    torch.testing.assert_close(ours.double(), expected, rtol=0, atol=16 * 2**-23 * 8)
    if groups == 1:
        assert torch.equal(CorrelationVolume(16, levels)(left, right), ours)


def test_group_correlation_refuses_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="positive divisor of the features' 12 channels"):
        GroupCorrelationVolume(12, 4, groups=5)


def test_channels_flow_from_component_to_component_and_attention_goes_where_named():
    """Non-default widths everywhere: nothing downstream may assume PSMNet's 32/64/128 channels."""
    torch.manual_seed(0)
    network = StereoNetwork(
        max_disp=32,
        features={"_target_": "stereo.models.features.LightFeatures", "channels": [8, 16], "out_channels": 12},
        cost_volume={"_target_": "stereo.models.cost_volumes.GroupCorrelationVolume", "groups": 3},
        aggregation={"_target_": "stereo.models.aggregations.StackedHourglass", "channels": 6},
        regression={"_target_": "stereo.models.regression.SoftArgmaxRegression"},
        attention=[{"at": ["feature_extraction.output", "aggregation.dres3.bottleneck"], "zero_init": False},
                   {"at": "aggregation.dres1", "kind": "dot_product", "heads": 2, "key_channels": 4}],
    )
    assert network.cost_volume.out_channels == 3 and network.aggregation.dres0[0][0].in_channels == 3
    blocks = {name: m for name, m in network.named_modules() if name.endswith(tuple(("output", "bottleneck", "dres1")))
              and ".inserted." in name}
    assert {name: b.in_channels for name, b in blocks.items()} == {
        "feature_extraction.inserted.output": 12, "aggregation.inserted.dres1": 6,
        "aggregation.dres3.inserted.bottleneck": 12}
    assert blocks["aggregation.inserted.dres1"].key_channels == 4 and blocks["aggregation.inserted.dres1"].heads == 2
    left, right = torch.randn(2, 2, 3, 64, 64).unbind(0)
    outputs = network.train()(left, right)
    assert len(outputs) == 3 and all(o.shape == (2, 64, 64) for o in outputs)
    sum(o.mean() for o in outputs).backward()
    # the rebuilt config is plain data and rebuilds the same network
    rebuilt = build_network(network.config)
    assert list(rebuilt.state_dict()) == list(network.state_dict())
    with pytest.raises(ValueError, match="no insertion point 'aggregation.dres9.bottleneck'"):
        StereoNetwork(**{**{k: v for k, v in network.config.items() if k != "_target_"},
                         "attention": [{"at": "aggregation.dres9.bottleneck"}]})


def test_forward_hooks_on_every_component_fire_in_training_and_inference():
    network = build_network(model_config("ea_light", max_disp=32))
    fired = []
    for name in ("feature_extraction", "cost_volume", "aggregation", "regression", "aggregation.inserted.dres1"):
        network.get_submodule(name).register_forward_hook(lambda module, args, out, name=name: fired.append(name))
    left, right = torch.randn(2, 2, 3, 64, 96).unbind(0)
    network.train()(left, right)
    with torch.no_grad():
        network.eval()(left, right)
    assert fired.count("aggregation") == 2 and fired.count("aggregation.inserted.dres1") == 2
    assert fired.count("feature_extraction") == 4 and fired.count("regression") == 2


def _size(network: StereoNetwork) -> int:
    return max(64, network.feature_extraction.min_input_size)


class OffDevice(TorchDispatchMode):
    """Records every operation (forward and backward) that produces or reads a tensor off ``device``."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device, self.offenders = device, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        if any(t.device.type != self.device for t in tensors):
            self.offenders.append(str(func))
        return out


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_a_training_step_runs_with_network_and_batch_on_the_meta_device(name):
    """Forward, loss and backward with every parameter, buffer and input on ``meta`` (no data, no GPU
    needed), under a dispatch mode that flags every operation touching a tensor elsewhere: a tensor the
    forward pass or the loss makes on a default device (the CPU) is what breaks first on users' GPUs.
    (Plain ``meta`` alone would not catch it: some kernels, e.g. matmul, accept a CPU operand.)"""
    network = build_network(model_config(name, max_disp=16)).train().to("meta")
    size = _size(network)
    left, right = (torch.empty(2, 3, size, size, device="meta") for _ in range(2))
    target = torch.empty(2, size, size, device="meta")
    with OffDevice("meta") as watch:
        loss, _ = PSMNetLoss(16)(network(left, right), target)
        loss.backward()
    assert not watch.offenders, watch.offenders
    assert loss.device.type == "meta"
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in network.parameters())


def test_the_device_watch_sees_a_cpu_operand_that_meta_kernels_let_through():
    with OffDevice("meta") as watch:
        torch.matmul(torch.empty(3, 3, device="meta"), torch.ones(3, 3))  # runs, silently, on the CPU
    assert watch.offenders


@pytest.mark.slow  # ~7 s on 2 cores: the command's start (torch, Lightning) and two training steps
def test_a_new_cost_volume_in_one_file_and_one_yaml_trains_through_the_command_as_documented(tmp_path, synthetic_root):
    """docs/models.md's workflow as a researcher types it: a component file and a model config in their
    own folder, ``python -m stereo.train model=abs_light 'hydra.searchpath=[file://my_conf]'`` (plus
    tiny-run overrides) in a subprocess, through the command-line check; the checkpoint records the
    researcher's class and loads; the printed resume command keeps the search path and passes the check."""
    import importlib
    import shlex

    from bad_input.conftest import run_cli

    from stereo.cli import check_command_line
    from stereo.models.checkpoints import load_model

    package = tmp_path / "my_research"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "abs_difference.py").write_text(textwrap.dedent('''
        import torch
        import torch.nn.functional as F

        from stereo.models.components import CostVolume


        class AbsDifferenceVolume(CostVolume):
            """Per-channel |f_l(x) - f_r(x - d)|, zero where x - d < 0."""

            def __init__(self, in_channels: int, levels: int) -> None:
                super().__init__()
                self.levels, self.out_channels = levels, in_channels

            def forward(self, left, right):
                planes = [(left - right).abs()]
                for d in range(1, self.levels):
                    planes.append(F.pad((left[..., d:] - right[..., :-d]).abs(), (d, 0)))
                return torch.stack(planes, dim=2)
    '''))
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "abs_light.yaml").write_text(textwrap.dedent('''
        _target_: stereo.models.StereoNetwork
        max_disp: 192
        features: {_target_: stereo.models.features.LightFeatures, channels: [16, 32, 64], out_channels: 16}
        cost_volume: {_target_: my_research.abs_difference.AbsDifferenceVolume}
        aggregation: {_target_: stereo.models.aggregations.LightAggregation, channels: 16}
        regression: {_target_: stereo.models.regression.LowResolutionSoftArgmax}
        attention: [{at: aggregation.dres1}]
    '''))
    documented = ["model=abs_light", "hydra.searchpath=[file://my_conf]"]
    tiny = ["data.generate=null", f"data.train.root={synthetic_root}", f"data.val.root={synthetic_root}",
            "data.crop_size=[256,256]", "data.batch_size=2", "data.num_workers=0", "model.max_disp=32",
            "trainer=cpu", "trainer.max_steps=2", "trainer.limit_val_batches=0", "evaluate_before=false",
            "evaluate_after=false", "logger=none", f"paths.log_dir={tmp_path / 'logs'}", "hydra.run.dir=run"]
    done = run_cli("train", *documented, *tiny, cwd=tmp_path)  # my_research importable from there, as documented
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    recorded = torch.load(checkpoint, weights_only=True)
    assert recorded["global_step"] == 2
    config = recorded["hyper_parameters"]["model_config"]
    assert config["cost_volume"] == {"_target_": "my_research.abs_difference.AbsDifferenceVolume"}
    assert config["max_disp"] == 32 and not any(key in config for key in ("_recursive_", "_convert_"))

    resume = next(line for line in done.stdout.splitlines() if "resume with:" in line).split("resume with:")[1]
    args = shlex.split(resume)
    assert args[:3] == ["python", "-m", "stereo.train"] and documented[1] in args, resume
    assert f"ckpt_path={checkpoint.resolve()}" in args
    with pytest.MonkeyPatch.context() as patch:  # as the shell would run it: from the same folder
        patch.chdir(tmp_path)
        patch.syspath_prepend(str(tmp_path))
        _forget_my_research(patch)
        importlib.import_module("my_research.abs_difference")  # what loading a checkpoint of it needs (docs)
        assert check_command_line("train", args[3:]) is None
        assert check_command_line("train", [a for a in args[3:] if a != documented[1]]) is not None
        model = load_model(checkpoint)  # the registry knows the class once its module is imported
    assert type(model.cost_volume).__name__ == "AbsDifferenceVolume"


def _forget_my_research(patch: pytest.MonkeyPatch) -> None:
    """Each test writes its own ``my_research`` package into its own folder: a copy another test
    imported earlier in this process must not answer for it (its folder has other modules)."""
    for name in [m for m in sys.modules if m == "my_research" or m.startswith("my_research.")]:
        patch.delitem(sys.modules, name)


def _documented_files(folder: Path) -> list[Path]:
    """docs/models.md's code blocks that begin with a path comment (``# my_research/plain_head.py``),
    written to that path under ``folder``: the researcher's files exactly as the page gives them."""
    written = []
    for block in re.findall(r"^ *```\w*\n(.*?)^ *```", MODELS_DOC.read_text(encoding="utf-8"), re.M | re.S):
        code = textwrap.dedent(block)
        first = code.splitlines()[0]
        if re.fullmatch(r"# my_(research|conf)/[\w/]+\.(py|yaml)", first):
            path = folder / first[2:]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)
            written.append(path)
    (folder / "my_research" / "__init__.py").write_text("")
    return written


def test_a_new_aggregation_as_documented_trains_and_runs_optimised_with_the_plain_output(
        tmp_path, train_overrides, monkeypatch):
    """docs/models.md's researcher files (a cost volume, an aggregation that reads its volume as a plain
    tensor and knows nothing of the volume handoff, the ``abs_plain`` config) train two steps through
    the real ``train()``; the checkpoint's network then runs under ``optimize_for_inference``
    unchanged: its aggregation receives the tensor, and the output is the plain network's."""
    from stereo.models import load_model, optimize_for_inference
    from stereo.train import train

    written = {path.relative_to(tmp_path).as_posix() for path in _documented_files(tmp_path)}
    assert {"my_research/abs_difference.py", "my_research/plain_head.py", "my_conf/model/abs_light.yaml",
            "my_conf/model/abs_plain.yaml"} <= written
    monkeypatch.syspath_prepend(str(tmp_path))  # my_research importable, as the page says
    _forget_my_research(monkeypatch)
    cfg = compose("train", train_overrides(
        "model=abs_plain", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "trainer.max_steps=2",
        "trainer.limit_val_batches=0", "evaluate_before=false", "evaluate_after=false", "logger=none",
        "data.crop_size=[64,128]"))
    assert train(cfg)["global_step"] == 2
    model = load_model(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").eval()
    assert type(model.aggregation).__name__ == "PlainHead"

    fast = optimize_for_inference(model)
    received = []
    fast.aggregation.register_forward_pre_hook(lambda module, args: received.append(type(args[0])))
    left, right = torch.randn(2, 1, 3, 64, 96, generator=torch.Generator().manual_seed(0)).unbind(0)
    with torch.inference_mode():
        plain, fast_output = model(left, right), fast(left, right)
    assert received == [torch.Tensor] and fast.channels_last
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in fast.modules())  # folded: not the plain copy
    assert plain.std() > 0.1
    torch.testing.assert_close(fast_output, plain, rtol=1e-4, atol=1e-4)  # float32 rounding of folding and layout


def test_a_config_naming_a_class_of_the_wrong_kind_is_refused():
    config = model_config("ea_light")
    config["cost_volume"] = {"_target_": "stereo.models.aggregations.BasicAggregation"}
    with pytest.raises(ValueError, match="not a CostVolume subclass"):
        build_network(config)
    config["cost_volume"] = {"_target_": "collections.OrderedDict"}
    with pytest.raises(ValueError, match="not a CostVolume subclass"):
        build_network(config)


@pytest.mark.parametrize("levels", [2, 24])
def test_a_light_head_through_half_resolution_keeps_the_volume_size_and_refuses_bad_counts(levels):
    """LightAggregation's context blocks halve the 1/8 volume and come back to exactly its size at the
    smallest (max_disp 16: 2 levels) and the trained (192: 24 levels) range; counts are whole numbers."""
    from stereo.models.aggregations import LightAggregation

    head = LightAggregation(in_channels=4, channels=8, blocks=1, context_blocks=2).eval()
    volume = torch.randn(2, 4, levels, 6, 10)
    with torch.no_grad():
        (cost,) = head(volume)
    assert cost.shape == (2, 1, levels, 6, 10) and torch.isfinite(cost).all()
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="context_blocks must be a whole number >= 0"):
            LightAggregation(in_channels=4, context_blocks=bad)
