"""Errors in the command line itself (Hydra's grammar, unknown keys): one line with the fix."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("arguments, named", [
    (["left=my", "file.png"], "'left=\"my file.png\"'"),
    (["left=café.png"], "'left=\"café.png\"'"),
    (["left=a,b=c"], "quoted for Hydra"),
    (["no_such_key=1"], "+key=value"),
    (["batch_size=many"], "batch_size=many: expected a whole number"),
    (["swap_check=maybe"], "expected true or false"),
])
def test_a_command_line_error_gets_one_line_with_the_fix(workspace, run_command, arguments, named):
    run_command("infer", "ckpt_path=tiny.ckpt", *arguments).error_line(named)
    assert sorted(p.name for p in workspace.iterdir()) == ["left.png", "right.png", "tiny.ckpt"]


def test_hydra_full_error_shows_hydras_own_report(workspace, run_command):
    from hydra.errors import OverrideParseException

    with pytest.raises(OverrideParseException):
        run_command("infer", "left=café.png", full_error=True)
