"""The run record store: what a run was given and what it produced, kept with its audit record.

``<state_dir>/batch-records/<run-id>/`` (the service's user only — root, or
``batch.service_user`` — outside every project folder)::

    input/input.ipynb      the submitted notebook    the service, 0444  (sha256 in batch.submit)
    input/parameters.json  the parameters            the service, 0444
    output.ipynb           the executed notebook     the service, 0400  (sha256 in batch.finish)
    sandbox.log            what the sandbox printed outside the project log (driver errors)

``input/`` is mounted read-only at ``/batch-input`` in the run's sandbox:
no project member, nor the run itself, can change what the driver executes,
and the driver checks both sha256 anyway (:mod:`.driver`). The copies stay
after the run: an auditor reads what ran and what it produced next to the
events that name their sha256 (``ecluse audit``); the API serves none of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .runs import INPUT_DIR, INPUT_NOTEBOOK, PARAMETERS

ROOT_NAME = "batch-records"


def parameters_bytes(parameters: dict[str, Any]) -> bytes:
    """``parameters.json`` as the service writes it (its sha256 is checked by the driver)."""
    return json.dumps(parameters, indent=1, ensure_ascii=False, sort_keys=True).encode()


class RecordStore:
    """The service's own folders, one per run, under ``root`` (mode 0700). The sandbox
    launcher mounts a run's ``input/`` only when the service's uid owns it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)

    def sweep(self) -> list[dict[str, object]]:
        """Remove the temporary files (``.<name>.<hex>.tmp``) a killed service left
        half-written in run folders; at start only. Returns each with its size."""
        removed: list[dict[str, object]] = []
        for tmp in sorted(self.root.glob("*/.*.tmp")):
            if tmp.is_symlink() or not tmp.is_file():
                continue
            size = tmp.stat().st_size
            tmp.unlink(missing_ok=True)
            removed.append({"name": f"{tmp.parent.name}/{tmp.name}", "bytes": size})
        return removed

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def inputs(self, run_id: str) -> Path:
        """The folder mounted read-only at ``/batch-input`` in the run's sandbox."""
        return self.run_dir(run_id) / INPUT_DIR

    def store_inputs(self, run_id: str, notebook: bytes,
                     parameters: dict[str, Any]) -> tuple[str, str]:
        """Write the run's inputs (a new folder); return their sha256 (notebook, parameters)."""
        run = self.run_dir(run_id)
        run.mkdir(mode=0o700)  # FileExistsError: never reuse a record
        inputs = self.inputs(run_id)
        inputs.mkdir(mode=0o755)
        os.chmod(inputs, 0o755)
        params = parameters_bytes(parameters)
        for name, data in ((INPUT_NOTEBOOK, notebook), (PARAMETERS, params)):
            self._write(inputs / name, data, 0o444)
        os.chmod(inputs, 0o555)
        return hashlib.sha256(notebook).hexdigest(), hashlib.sha256(params).hexdigest()

    def keep(self, run_id: str, name: str, chunks: Iterable[bytes]) -> str:
        """Store ``name`` (root, 0400) from ``chunks``; return its sha256."""
        digest = hashlib.sha256()
        target = self.run_dir(run_id) / name
        tmp = target.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o400)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    fh.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return digest.hexdigest()

    @staticmethod
    def _write(path: Path, data: bytes, mode: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if os.geteuid() == 0:
                os.fchown(fh.fileno(), 0, 0)
            os.fchmod(fh.fileno(), mode)
