"""Run ``ecluse.sdc`` on a staged file, render its preview, and keep both.

:func:`inspect_staged` is what the service calls when a file is attached: the
disclosure report and the checker's preview (:func:`~.preview.render_preview`)
are made together, once, and stored; nothing reads the staged bytes again for
a reviewer. The checker sees the staged object under its display name (a hard link in a
private temporary folder), so format detection by extension works while the
object itself stays where it is. Failing closed: if the checker is missing or
crashes, the file gets verdict ``review`` with the error as its finding.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..sdc.report import Finding, Severity, Verdict
from .preview import render_preview

log = logging.getLogger(__name__)


def _fallback(message: str, fmt: str = "unknown") -> dict[str, Any]:
    return {
        "verdict": str(Verdict.REVIEW),
        "format": fmt,
        "findings": [Finding("checker-error", Severity.REVIEW, message).to_dict()],
    }


def check_staged(object_path: Path, display_name: str, policy: Any, tmp_dir: Path) -> dict:
    """Return the sdc report of a staged file as a dict (never raises)."""
    workdir = Path(tempfile.mkdtemp(prefix="check-", dir=tmp_dir))
    try:
        view = workdir / display_name
        try:
            os.link(object_path, view)
        except OSError:
            shutil.copyfile(object_path, view)
        return check_named(view, display_name, policy)
    except Exception as e:  # fail closed: a crashing checker sends the file to review
        log.exception("disclosure check of %s failed", display_name)
        return _fallback(f"automatic check failed ({type(e).__name__}); review by hand")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check_named(path: Path, display_name: str, policy: Any) -> dict[str, Any]:
    """The sdc report (a dict) of a file already under its display name (may raise)."""
    from ..sdc.check import check_file  # deferred: pandas and pyarrow, checks only

    return check_file(path, policy, display_name=display_name).to_dict()


def inspect_named(path: Path, display_name: str, policy: Any,
                  preview_rows: int = 200) -> dict[str, Any]:
    """Report and preview of a file already under its display name (never raises)."""
    try:
        report = check_named(path, display_name, policy)
    except Exception as e:  # fail closed
        log.exception("disclosure check of %s failed", display_name)
        return unjudged(f"automatic check failed ({type(e).__name__}); review by hand")
    return {"report": report, "preview": render_preview(path, display_name, report,
                                                        preview_rows)}


def inspect_staged(object_path: Path, display_name: str, policy: Any, tmp_dir: Path,
                   preview_rows: int = 200) -> dict[str, Any]:
    """``{"report": ..., "preview": ...}`` of a staged file (never raises)."""
    report = check_staged(object_path, display_name, policy, tmp_dir)
    try:
        preview = render_preview(Path(object_path), display_name, report, preview_rows)
    except Exception as e:  # pragma: no cover - render_preview never raises
        log.exception("preview of %s failed", display_name)
        preview = {"kind": "none", "error": f"cannot preview this file ({type(e).__name__})"}
    return {"report": report, "preview": preview}


def unjudged(message: str) -> dict[str, Any]:
    """What a file gets when it could not be inspected at all: ``review``, no preview."""
    return {"report": _fallback(message), "preview": {"kind": "none", "error": message}}


class ProcessChecker:
    """Runs :func:`inspect_staged` in worker processes (forkserver).

    Disclosure checks are CPU-bound pandas work: in the service's threads they
    hold the GIL and starve the event loop. A small process pool runs them in
    parallel on every core and bounds each check by ``timeout`` seconds (a
    check that overruns sends the file to ``review``).
    """

    def __init__(self, processes: int = 2, timeout: float = 300.0) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.timeout = timeout
        self.pool = ProcessPoolExecutor(
            max_workers=processes, mp_context=multiprocessing.get_context("forkserver")
        )

    def __call__(self, object_path: Path, display_name: str, policy: Any, tmp_dir: Path,
                 preview_rows: int = 200) -> dict:
        from concurrent.futures import TimeoutError as FutureTimeout

        future = self.pool.submit(inspect_staged, object_path, display_name, policy, tmp_dir,
                                  preview_rows)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()
            log.error("disclosure check of %s timed out after %ss", display_name, self.timeout)
            return unjudged(f"automatic check timed out after {self.timeout:.0f}s; review by hand")
        except Exception as e:  # a crashed worker: fail closed
            log.exception("disclosure check worker failed on %s", display_name)
            return unjudged(f"automatic check failed ({type(e).__name__}); review by hand")

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
