"""What runs inside the sandbox: papermill, with progress and a machine-readable result.

The driver is passed to the workspace Python as ``python -c`` (the Écluse
package itself is not mounted in sandboxes; papermill and ipykernel of the
workspace environment are). It runs in ``/project/batch/<run-id>/`` as the
run's identity and writes, next to ``input.ipynb`` and ``parameters.json``:

* ``output.ipynb`` — the executed notebook (papermill saves it after every
  cell, so a failed or killed run keeps what was executed);
* ``progress.json`` — ``{"done": n, "total": m}`` after every cell;
* ``result.json`` — ``{"status": "succeeded"}`` or ``{"status": "failed",
  "cell_index", "exec_count", "ename", "evalue"}``.

``cell_index`` is the index of the failing cell in the *input* notebook
(papermill's injected parameters cell is not counted).
"""

from __future__ import annotations

import sys
from pathlib import Path

DRIVER = r'''
import json, logging, os, sys, traceback

# jsonschema (via nbformat) builds an Earley parser for IRI formats at import when
# rfc3987-syntax is installed: seconds of CPU per run for a format nbformat never uses.
sys.modules.setdefault("rfc3987_syntax", None)
logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                    format="%(asctime)s %(levelname)s %(message)s")

def write(name, data):
    tmp = "." + name + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, name)

kernel = sys.argv[1]
with open("parameters.json") as fh:
    params = json.load(fh)

import papermill as pm
from papermill.engines import NotebookExecutionManager

_complete = NotebookExecutionManager.cell_complete

def cell_complete(self, cell, cell_index=None, **kw):
    out = _complete(self, cell, cell_index=cell_index, **kw)
    try:
        write("progress.json", {"done": (cell_index or 0) + 1, "total": len(self.nb.cells)})
    except OSError:
        pass
    return out

NotebookExecutionManager.cell_complete = cell_complete

def input_index(index):
    try:
        import nbformat
        nb = nbformat.read("output.ipynb", as_version=4)
        cells = [c for c in nb.cells
                 if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
        injected = sum(1 for c in cells[:index]
                       if "injected-parameters" in c.get("metadata", {}).get("tags", []))
        return index - injected
    except Exception:
        return index

try:
    pm.execute_notebook("input.ipynb", "output.ipynb", parameters=params, kernel_name=kernel,
                        progress_bar=False, log_output=True, cwd=".")
except pm.PapermillExecutionError as e:
    write("result.json", {"status": "failed", "cell_index": input_index(e.cell_index),
                          "exec_count": e.exec_count, "ename": e.ename,
                          "evalue": str(e.evalue)[:2000]})
    print(f"cell {input_index(e.cell_index)} failed: {e.ename}: {e.evalue}", file=sys.stderr)
    sys.exit(3)
except BaseException as e:
    write("result.json", {"status": "failed", "cell_index": None, "exec_count": None,
                          "ename": type(e).__name__, "evalue": str(e)[:2000]})
    traceback.print_exc()
    sys.exit(4)
write("result.json", {"status": "succeeded"})
'''


def driver_command(python_env: Path | None, kernel_name: str) -> list[str]:
    """The sandbox command: the workspace Python running :data:`DRIVER`."""
    env = Path(python_env or sys.prefix)
    return [str(env / "bin" / "python"), "-c", DRIVER, kernel_name]
