"""``python -m ecluse.airlock.checkjob /airlock-check/job.json``: one job, in a check sandbox.

Two kinds of job, both started by :class:`~ecluse.airlock.checkbox.SandboxChecker`,
never by the service itself; each prints one line ``ECLUSE-CHECK-RESULT <json>``:

* ``inspect`` (the default): reads the job (display name, disclosure policy,
  preview rows), inspects ``/airlock-check/in/<name>`` (report and preview) and,
  for a ``fail`` table, makes the fixed version the airlock proposes
  (:func:`~.checks.propose`);
* ``difference``: judges the count tables of a request's files (in the job) as
  one set and against the ledger of earlier releases of the request's scopes,
  read from ``/airlock-ledger/ledger.json`` (mounted read-only): the
  ``differencing`` findings of each file (:func:`~.ledger.difference`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ecluse.sdc import DisclosurePolicy

from . import ledger
from .checks import inspect_named

#: the prefix of the one line of stdout that carries the result
RESULT_MARK = "ECLUSE-CHECK-RESULT "
#: where a differencing job finds the ledger rows of its scopes (a read-only mount)
LEDGER_DIR = "/airlock-ledger"
LEDGER_FILE = "ledger.json"


def main(argv: list[str]) -> int:
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    policy = DisclosurePolicy(**job["policy"])
    result: object
    if job.get("kind") == "difference":
        released = json.loads((Path(LEDGER_DIR) / LEDGER_FILE).read_text())
        result = {"differencing": ledger.difference(job["files"], released, policy)}
    else:
        name = str(job["name"])
        result = inspect_named(job_path.parent / "in" / name, name, policy,
                               int(job.get("preview_rows", 200)))
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
