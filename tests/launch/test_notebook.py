"""``launch/notebook.ipynb`` runs top to bottom (nbclient, a local IPython kernel) on the demo's
smoke scale, so that it can never go stale.

Its storage starts with the pre-training runs of the session's demo run (``demo_smoke_run``,
tests/conftest.py: the same spec, so the same content-addressed run directories), so the
notebook's ``api.pretrain`` finds them finished instead of starting Ray Train four more times;
its Tuner then runs every evaluation trial, and ``api.run`` the representation analyses and the
report.

The test sets the notebook's parameters the way papermill does (a cell after the one tagged
``parameters``), points its kernel at the session's Ray instance (``RAY_ADDRESS``), and adds a
last cell that reports what the notebook's variables hold; the assertions check the Tuner
that ``api.build_tuner`` returned, the row count, the report path and the outputs shown.
"""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest
from launch_helpers import REPO
from nbclient import NotebookClient

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NOTEBOOK = REPO / "launch" / "notebook.ipynb"

PROBE = """
import json, ray.tune
print(json.dumps({"tuner_class": f"{type(tuner).__module__}.{type(tuner).__qualname__}",
                  "is_tuner": isinstance(tuner, ray.tune.Tuner), "grid": len(result_grid),
                  "grid_errors": result_grid.num_errors, "rows": len(results),
                  "report": str(paths.html), "summary": summary.one_line()}))
"""


def _stdout(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out.get("output_type") == "stream" and out.get("name") == "stdout")


def test_the_notebook_runs_top_to_bottom(ray_session, demo_smoke_run, tmp_path, monkeypatch):
    from raysweep.experiment.demo import demo_spec

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    [parameters] = [i for i, cell in enumerate(notebook.cells)
                    if "parameters" in cell.metadata.get("tags", [])]
    storage = tmp_path / "runs"
    finished = demo_spec(smoke=True, storage=str(demo_smoke_run.storage)).directory / "pretrain"
    spec = demo_spec(smoke=True, storage=str(storage))
    shutil.copytree(finished, spec.directory / "pretrain")
    encoders = {p: p.stat().st_mtime_ns for p in (spec.directory / "pretrain").glob("*/encoder.pt")}
    assert len(encoders) == 4
    notebook.cells.insert(parameters + 1, nbformat.v4.new_code_cell(
        f"storage = {str(storage)!r}", metadata={"tags": ["injected-parameters"]}))
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    NotebookClient(notebook, timeout=1500, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    found = json.loads(_stdout(notebook.cells[-1]))
    n_rows = (4 * 3 + 1) * 5  # 4 pre-trained encoders x 3 protocols + random fine-tuned, 5 seeds
    assert found["is_tuner"] and found["tuner_class"] == "ray.tune.tuner.Tuner"
    assert found["grid_errors"] == 0 and found["grid"] > 0
    assert found["rows"] == n_rows
    assert found["report"] == str(spec.directory / "report" / "report.html")
    assert (spec.directory / "report" / "report.html").is_file()
    assert f"{n_rows} result rows (0 new), 4 pretrain runs" in found["summary"]  # the Tuner did them
    assert {p: p.stat().st_mtime_ns for p in encoders} == encoders  # none trained again
    shown = "".join(_stdout(cell) for cell in notebook.cells[:-1])
    assert f"{n_rows} result rows\n" in shown and found["report"] in shown
    assert shown.startswith("experiment 'paper_isic' -> ")  # the plan of the paper's study
