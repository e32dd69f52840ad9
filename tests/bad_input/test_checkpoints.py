"""Hostile checkpoints through every command: refused in one line, nothing from them runs."""

from __future__ import annotations

import pytest

from hostile_checkpoints import hostile_configs, make_victim, untouched, write_hostile_checkpoint


@pytest.mark.parametrize("command", ["infer", "evaluate", "export", "train"])
def test_hostile_checkpoint_changes_nothing_through_each_command(workspace, run_command, command):
    victim, marker, payload = make_victim(workspace)
    checkpoint = write_hostile_checkpoint(workspace / "hostile.ckpt",
                                          hostile_configs(victim, marker, payload)["builtins.open"])
    overrides = {
        "infer": ["left=left.png", "right=right.png", "output_dir=out"],
        "evaluate": ["paths.log_dir=logs"],
        "export": ["output=model.onnx"],
        "train": ["trainer=cpu", "paths.log_dir=logs"],
    }[command]
    run_command(command, f"ckpt_path={checkpoint}", *overrides).error_line(str(checkpoint), "builtins.open")
    assert untouched(victim, marker)
    assert not (workspace / "model.onnx").exists() and not (workspace / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["os.system", "subprocess.run", "torch.load", "nested attention", "pickle"])
def test_every_hostile_checkpoint_kind_through_inference(workspace, run_command, attack):
    victim, marker, payload = make_victim(workspace)
    checkpoint = (payload if attack == "pickle" else
                  write_hostile_checkpoint(workspace / "hostile.ckpt", hostile_configs(victim, marker, payload)[attack]))
    run_command("infer", f"ckpt_path={checkpoint}", "left=left.png", "right=right.png",
                "output_dir=out").error_line(str(checkpoint))
    assert untouched(victim, marker)


def test_our_weights_without_their_model_config_are_one_line_not_hundreds_of_missing_keys(workspace, run_command):
    import torch

    from inference_checkpoints import write_our_checkpoint

    path = write_our_checkpoint(workspace / "ours.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["hyper_parameters"]
    torch.save(checkpoint, path)
    result = run_command("infer", f"ckpt_path={path}", "left=left.png", "right=right.png", "output_dir=out")
    result.error_line(str(path), "without hyper_parameters.model_config")
    assert not (workspace / "out").exists()
