"""What runs inside the sandbox: papermill, with progress and a machine-readable result.

The driver is passed to the workspace Python as ``python -c`` (the Écluse
package itself is not mounted in sandboxes; papermill and ipykernel of the
workspace environment are). It runs in ``/project/batch/<run-id>/`` as the
run's identity.

Its inputs are not in the project folder (which every project member may
write): ``input.ipynb`` and ``parameters.json`` are root-owned files of the
run record store, mounted read-only at ``/batch-input``. The driver reads
each once, refuses it when its sha256 differs from the one submitted (passed
on the command line by the service), and executes the bytes it checked —
never a path read again later.

It writes, in the run folder (project data, readable by project members):

* ``output.ipynb`` — the executed notebook (papermill saves it after every
  cell, so a failed or killed run keeps what was executed);
* ``log.txt`` — papermill's log with the cell outputs: the driver's stdout
  and stderr are this file, so nothing of the notebook's output reaches the
  sandbox's stdout, which the service keeps (root only) in the record store;
* ``progress.json`` — ``{"done": n, "total": m}`` after every cell;
* ``result.json`` — ``{"status": "succeeded"}``, ``{"status": "failed",
  "cell_index", "exec_count", "ename", "evalue"}`` or ``{"status":
  "refused", "input"}`` (an input's sha256 differs: exit status 5).

``cell_index`` is the index of the failing cell in the *input* notebook
(papermill's injected parameters cell is not counted).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .runs import INPUT_MOUNT

DRIVER = r'''
import hashlib, json, logging, os, sys, traceback

# what the run writes: readable by the project's members, writable by the run only
os.umask(0o027)
# the log is project data: from here on stdout and stderr are log.txt in the run folder
status = os.fdopen(os.dup(1), "w")
try:
    os.unlink("log.txt")
except FileNotFoundError:
    pass
_fd = os.open("log.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
os.dup2(_fd, 1)
os.dup2(_fd, 2)
os.close(_fd)

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

kernel, want_notebook, want_parameters, INPUT = sys.argv[1:5]

def checked(name, want):
    """The input's bytes, read once, when their sha256 is the submitted one."""
    with open(os.path.join(INPUT, name), "rb") as fh:
        data = fh.read()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        write("result.json", {"status": "refused", "input": name})
        print(f"refused: {name} has sha256 {got}, not the submitted {want}", file=sys.stderr)
        print(f"refused: {name} sha256 {got} != {want}", file=status, flush=True)
        sys.exit(5)
    return data

notebook_bytes = checked("input.ipynb", want_notebook)
params = json.loads(checked("parameters.json", want_parameters))

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
    import nbformat
    notebook = nbformat.reads(notebook_bytes.decode("utf-8"), as_version=4)
    pm.execute_notebook(notebook, "output.ipynb", parameters=params, kernel_name=kernel,
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


def driver_command(python_env: Path | None, kernel_name: str, notebook_sha256: str,
                   parameters_sha256: str) -> list[str]:
    """The sandbox command: the workspace Python running :data:`DRIVER`."""
    env = Path(python_env or sys.prefix)
    return [str(env / "bin" / "python"), "-c", DRIVER, kernel_name, notebook_sha256,
            parameters_sha256, INPUT_MOUNT]
