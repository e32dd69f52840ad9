"""The demo notebook executes top to bottom (so it never rots) without touching the committed file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "demo.ipynb"


def test_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_demo_notebook_executes_in_a_temporary_folder(tmp_path, monkeypatch):
    before = hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest()
    monkeypatch.delenv("STEREO_DEMO_CKPT", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend must render the figures
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "shipped weights ea_census_zero_shot" in outputs, "without STEREO_DEMO_CKPT it runs the shipped weights"
    assert "EPE" in outputs
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the figure and the point-cloud view must render"
    assert hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest() == before
    assert list(tmp_path.iterdir()) == [], "the notebook must not write files"
