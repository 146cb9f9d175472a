"""The notebooks of ``examples/`` run top to bottom, each in a fresh folder, in a ``python3`` kernel of this
interpreter (nbclient), importing the segalign under test; matplotlib draws with Agg. Every notebook asserts what it
shows (PNGs read back equal to the labels, labels lined up with the pixel_array, slices in InstanceNumber order...),
so a cell that raises fails the test. The notebooks are committed without outputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import segalign

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 120


def test_the_examples_are_there_and_listed_in_their_readme() -> None:
    assert [path.name for path in NOTEBOOKS] == ["01_align_and_save_pngs.ipynb", "02_training_set_loop.ipynb"]
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert all(path.name in readme for path in NOTEBOOKS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(notebook: Path) -> None:
    """No outputs, execution counts or images in the repository: the notebooks are run here, not stored run."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code), notebook.name
    assert all("attachments" not in cell for cell in cells), notebook.name


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_and_its_assertions_hold(notebook: Path, tmp_path: Path, monkeypatch) -> None:
    missing = [name for name in ("nbclient", "nbformat", "ipykernel", "matplotlib") if not _importable(name)]
    if missing:
        pytest.skip(f"running the example notebooks needs {', '.join(missing)} (pip install -e '.[test]')")
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # The kernel inherits this environment: the segalign under test first on its path, matplotlib without a display.
    package_parent = str(Path(segalign.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    document = nbformat.read(notebook, as_version=4)
    # First, a cell of the test's own: the kernel is this interpreter's and imports this segalign.
    check = (f"import sys, segalign\nassert sys.prefix == {sys.prefix!r}, sys.prefix\n"
             f"assert segalign.__file__ == {segalign.__file__!r}, segalign.__file__")
    document.cells.insert(0, nbformat.v4.new_code_cell(check))
    client = NotebookClient(document, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{notebook.name}: a cell raised\n{error}", pytrace=False)
    assert list(tmp_path.iterdir()), "the notebook wrote its outputs in its own folder"


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None
