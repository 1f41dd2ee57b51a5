"""Every notebook runs from top to bottom and shows pictures."""

from pathlib import Path

import pytest
from notebook_runner import run

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_draws(path):
    notebook = run(str(path))
    outputs = [out for cell in notebook["cells"] for out in cell.get("outputs", [])]
    assert any("image/png" in out.get("data", {}) for out in outputs)


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"ad_reconstruction.ipynb", "patch_extraction_tour.ipynb"} <= names
