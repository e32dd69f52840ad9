"""stereo.cli.entry_point: expected errors become one stderr line and status 2, others keep their traceback."""

from __future__ import annotations

import hydra
import pytest
from omegaconf import OmegaConf

from stereo.cli import EXIT_USER_ERROR, OutputDirError, entry_point
from stereo.data.io import DataError


def _fails_with(error: BaseException):
    @entry_point
    def task(cfg=None):
        raise error

    return task


@pytest.mark.parametrize("error", [FileNotFoundError("a.png: file not found"), DataError("b.png: truncated\nsecond line"),
                                   ValueError("max_disp must be a multiple of 16"), OutputDirError("out is in use")])
def test_expected_errors_print_one_line_and_exit_2(error, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        _fails_with(error)()
    assert exit_info.value.code == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(error).splitlines()[0] in lines[0]


def test_notes_are_kept_on_the_line(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    error = DataError("c.pfm: file is empty")
    error.add_note("while loading sample 3")
    with pytest.raises(SystemExit):
        _fails_with(error)()
    assert "c.pfm: file is empty while loading sample 3" in capsys.readouterr().err


def test_unexpected_errors_and_full_error_keep_the_traceback(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(RuntimeError, match="bug"):
        _fails_with(RuntimeError("bug"))()
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(FileNotFoundError):
        _fails_with(FileNotFoundError("a.png"))()


def test_instantiation_errors_report_the_cause_and_the_config_key(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = OmegaConf.create({"model": {"_target_": "stereo.models.PSMNet", "max_disp": 30}})

    @entry_point
    def task(cfg):
        hydra.utils.instantiate(cfg.model)

    with pytest.raises(SystemExit):
        task(cfg)
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: config model: max_disp must be a positive multiple of 16") and "\n" not in line


def test_unresolvable_interpolation_names_the_keys_that_use_it(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = OmegaConf.create({"data": {"generate": None, "train": {"root": "${data.generate.root}"}}})

    @entry_point
    def task(cfg):
        return cfg.data.train.root

    with pytest.raises(SystemExit):
        task(cfg)
    line = capsys.readouterr().err.strip()
    assert "data.generate" in line and "data.train.root=<path>" in line and "\n" not in line


def test_errors_from_dataloader_workers_keep_only_the_original_message(capsys, monkeypatch):
    import torch

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise DataError("d.png: cannot decode image")

    @entry_point
    def task(cfg=None):
        next(iter(torch.utils.data.DataLoader(Broken(), num_workers=1)))

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit):
        task()
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: d.png: cannot decode image") and "Traceback" not in line and "\n" not in line
