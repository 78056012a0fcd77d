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

#: the largest fixed table kept as a proposal (its CSV text, stored with the file)
MAX_PROPOSAL_BYTES = 1 << 20


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
    from ..sdc.contributors import side_of  # deferred: pandas, checks only

    report = check_file(path, policy, display_name=display_name)
    out = report.to_dict()
    # a magnitude table, or the largest contributors behind one: kept so that the
    # request's files, judged together later from their stored reports, can be matched
    # (dominance with the contributors in a supporting file, :mod:`.ledger`)
    try:
        side = side_of(path, report)
    except Exception:  # noqa: BLE001 - the file's own report stands
        log.exception("dominance side of %s failed", display_name)
        side = None
    if side is not None:
        out.setdefault("details", {})["dominance"] = side
    return out


def inspect_named(path: Path, display_name: str, policy: Any,
                  preview_rows: int = 200) -> dict[str, Any]:
    """Report, preview and (for a ``fail`` file) the fixed version proposed, of a file
    already under its display name (never raises)."""
    try:
        report = check_named(path, display_name, policy)
    except Exception as e:  # fail closed
        log.exception("disclosure check of %s failed", display_name)
        return unjudged(f"automatic check failed ({type(e).__name__}); review by hand")
    return _with_proposal({"report": report, "preview": render_preview(
        path, display_name, report, preview_rows)}, path, display_name, policy)


def propose(path: Path, display_name: str, report: dict[str, Any],
            policy: Any) -> dict[str, Any] | None:
    """For a ``fail`` file, the fixed version the airlock proposes (never raises).

    :func:`ecluse.sdc.suppress.fix_csv` rewrites the table — rounding to the
    policy's ``rounding_base`` when the policy requires rounded counts, else primary
    and secondary suppression — and checks the result again: ``{"method", "notes",
    "verdict", "text", "size"}`` when the fixed table passes, else ``{"error"}``
    saying why no fix is proposed. ``None`` for a file that did not fail."""
    if report.get("verdict") != "fail":
        return None
    from ..sdc.suppress import CannotFix, fix_csv  # deferred: pandas, checks only

    method = "round" if getattr(policy, "rounding_required", False) else "suppress"
    folder = Path(tempfile.mkdtemp(prefix="fix-"))
    try:
        fixed = folder / display_name
        try:
            fix = fix_csv(path, fixed, policy, method)
        except CannotFix as e:
            return {"method": method, "error": f"no fixed version can be proposed: {e}"}
        except Exception as e:
            log.exception("the fix of %s failed", display_name)
            return {"method": method, "error": "no fixed version can be proposed (the fix "
                    f"failed: {type(e).__name__})"}
        verdict = str(fix.report.verdict) if fix.report else "review"
        if verdict != "pass":
            why = next((f.message for f in fix.report.findings), "") if fix.report else ""
            return {"method": method, "error": "no fixed version can be proposed: the fixed "
                    f"table would still be {verdict}" + (f" ({why})" if why else "")}
        data = fixed.read_bytes()
        if len(data) > MAX_PROPOSAL_BYTES:
            return {"method": method, "error": "no fixed version can be proposed: the fixed "
                    f"table would be {len(data)} bytes (at most {MAX_PROPOSAL_BYTES})"}
        return {"method": method, "notes": list(fix.notes), "verdict": verdict,
                "text": data.decode("utf-8"), "size": len(data)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _with_proposal(result: dict[str, Any], path: Path, display_name: str,
                   policy: Any) -> dict[str, Any]:
    proposal = propose(path, display_name, result["report"], policy)
    if proposal is not None:
        result["proposal"] = proposal
    return result


def inspect_staged(object_path: Path, display_name: str, policy: Any, tmp_dir: Path,
                   preview_rows: int = 200) -> dict[str, Any]:
    """``{"report": ..., "preview": ..., "proposal": ...}`` of a staged file (never
    raises; ``proposal`` for a ``fail`` file only)."""
    report = check_staged(object_path, display_name, policy, tmp_dir)
    try:
        preview = render_preview(Path(object_path), display_name, report, preview_rows)
    except Exception as e:  # pragma: no cover - render_preview never raises
        log.exception("preview of %s failed", display_name)
        preview = {"kind": "none", "error": f"cannot preview this file ({type(e).__name__})"}
    result = {"report": report, "preview": preview}
    if report.get("verdict") != "fail":
        return result
    workdir = Path(tempfile.mkdtemp(prefix="check-", dir=tmp_dir))
    try:  # the fix reads the file under its display name (format by extension)
        view = workdir / display_name
        try:
            os.link(object_path, view)
        except OSError:
            shutil.copyfile(object_path, view)
        return _with_proposal(result, view, display_name, policy)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def unjudged(message: str) -> dict[str, Any]:
    """What a file gets when it could not be inspected at all: ``review``, no preview."""
    return {"report": _fallback(message), "preview": {"kind": "none", "error": message}}


class InlineChecker:
    """Runs :func:`inspect_staged` in the calling thread: the checker of a service that
    runs no check sandbox nor worker process (the CLI, tests); what a background check
    thread (:mod:`.background`) calls when ``check_processes`` is 0."""

    def __call__(self, object_path: Path, display_name: str, policy: Any, tmp_dir: Path,
                 preview_rows: int = 200) -> dict:
        return inspect_staged(object_path, display_name, policy, tmp_dir, preview_rows)


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
