"""``python -m ecluse.airlock.checkjob /airlock-check/job.json``: one inspection, in a check sandbox.

Reads the job (display name, disclosure policy, preview rows), inspects
``/airlock-check/in/<name>`` (report and preview) and prints one line
``ECLUSE-CHECK-RESULT <json>`` on stdout. Started by
:class:`~ecluse.airlock.checkbox.SandboxChecker`, never by the service itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ecluse.sdc import DisclosurePolicy

from .checks import inspect_named

#: the prefix of the one line of stdout that carries the result
RESULT_MARK = "ECLUSE-CHECK-RESULT "


def main(argv: list[str]) -> int:
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    name = str(job["name"])
    policy = DisclosurePolicy(**job["policy"])
    result = inspect_named(job_path.parent / "in" / name, name, policy,
                           int(job.get("preview_rows", 200)))
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
