"""Check files: the library entry points the airlock and ``ecluse check`` call.

:func:`check_file` never raises for bad input: whatever goes wrong while
reading becomes a ``reader-error`` finding and the file goes to ``review``.
A file is ``pass`` only when a table or array was judged and nothing was
found.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .acro import attach, judge_results_file
from .archive import read_gzip, read_zip
from .carriers import Ctx, judge_image_text
from .contributors import judge_supporting_contributors
from .differencing import difference_reports
from .other import read_notebook, read_text, read_xarray
from .policy import DisclosurePolicy
from .readers import (
    read_arrow,
    read_csv,
    read_excel,
    read_html,
    read_json,
    read_jsonl,
    read_parquet,
)
from .report import FileReport, Report, Severity
from .rules import finding
from .sniff import sniff
from .table import from_frame

log = logging.getLogger(__name__)

#: formats that cannot be judged automatically, with the reason shown
UNJUDGEABLE = {
    "image": "image: a person must look at it",
    "pdf": "PDF document: a person must read it",
    "office": "office document: a person must read it",
    "archive-other": "archive format that is not opened (only zip and gzip are)",
    "database": "database file: may hold row-level data; a person must look",
    "dataset": "statistical dataset file (Stata/SPSS/Avro…): usually row-level; a person must look",
    "binary": "binary content of unknown format",
    "directory": "a directory that is not a Zarr store",
}


def check_file(path: str | os.PathLike[str], policy: DisclosurePolicy | None = None, *,
               display_name: str | None = None) -> FileReport:
    """Check one file (or Zarr directory) and return its report. Never raises for bad input."""

    policy = policy or DisclosurePolicy()
    p = Path(path)
    ctx = Ctx(policy=policy, check=_dispatch)
    fmt = _dispatch(p, ctx)
    name = display_name or str(path)
    _keep_count_tables(ctx, name)
    report = FileReport(path=name, format=fmt,
                        verdict=FileReport.verdict_of(ctx.findings), findings=ctx.findings,
                        policy=policy.model_dump(), details=ctx.details)
    judge_results_file(p, report)
    return report


def _keep_count_tables(ctx: Ctx, name: str) -> None:
    """The file's count tables, named after it, in its details (for differencing)."""
    if ctx.count_tables:
        for t in ctx.count_tables:
            t.source = f"{name} ({t.source})" if t.source else name
        ctx.details["count_tables"] = [t.to_dict() for t in ctx.count_tables]


def check_frame(df: pd.DataFrame, policy: DisclosurePolicy | None = None, *,
                name: str = "<data frame>") -> FileReport:
    """Check a pandas DataFrame in memory (a crosstab or summary a researcher just made).

    A MultiIndex header or index is flattened into plain columns first, exactly as
    it would be after ``to_csv``.
    """
    policy = policy or DisclosurePolicy()
    ctx = Ctx(policy=policy, check=_dispatch)
    try:
        ctx.judge(from_frame(df))
    except Exception as e:  # noqa: BLE001 - fail closed
        ctx.add(finding("reader-error", f"cannot judge the frame: {type(e).__name__}: "
                        f"{str(e)[:300]}"))
    details: dict = {"rows": int(len(df)), "columns": int(df.shape[1])}
    _keep_count_tables(ctx, name)
    details.update(ctx.details)
    return FileReport(path=name, format="dataframe", verdict=FileReport.verdict_of(ctx.findings),
                      findings=ctx.findings, policy=policy.model_dump(), details=details)


def check_paths(paths: Iterable[str | os.PathLike[str]],
                policy: DisclosurePolicy | None = None) -> Report:
    """Check files; directories are walked (a Zarr store is one unit).

    The files are one set: tables that differ by a small group fail together
    (:mod:`ecluse.sdc.differencing`)."""

    policy = policy or DisclosurePolicy()
    report = Report()
    checked: list[tuple[Path, FileReport]] = []
    for path in paths:
        for p in _expand(Path(path)):
            report.files.append(check_file(p, policy))
            checked.append((p, report.files[-1]))
    # ACRO's results.json among the outputs: its judgement of each output is shown
    # beside ours on that output's report
    attach(report)
    # a magnitude table with its largest contributors in another file
    judge_supporting_contributors(checked, policy)
    difference_reports(report.files, policy)
    return report


def _expand(p: Path, top: bool = True) -> list[Path]:
    if (p.is_symlink() and not top) or not p.is_dir() or (p / ".zgroup").exists() or (p / "zarr.json").exists() or \
            (p / ".zarray").exists():
        return [p]
    out: list[Path] = []
    for child in sorted(p.iterdir()):
        out.extend(_expand(child, top=False))  # links below the top are not followed
    return out


def _dispatch(path: Path, ctx: Ctx) -> str:
    """Sniff and read ``path`` into ``ctx``; returns the format name."""
    fmt = "unknown"
    try:
        if not path.exists():
            ctx.add(finding("reader-error", "file not found", **ctx.base))
            return fmt
        if path.is_file() and path.stat().st_size > ctx.policy.max_file_bytes:
            ctx.add(finding("file-too-large", f"{path.stat().st_size} bytes, more than "
                            f"{ctx.policy.max_file_bytes}: not read", **ctx.base))
            return fmt
        sn = sniff(path)
        fmt = sn.format
        if fmt in UNJUDGEABLE:
            msg = UNJUDGEABLE[fmt]
            if sn.detail and sn.detail not in msg:
                msg = f"{sn.detail}: {msg}"
            ctx.add(finding("unjudgeable-format", msg, **ctx.base))
            if fmt == "pdf" or sn.detail in ("PNG image", "SVG image"):
                # the file stays review; text in it that reads as records blocks
                judge_image_text(path, "pdf" if fmt == "pdf" else sn.detail, ctx)
            elif fmt == "binary" and sn.extra.get("nul_bytes"):
                _read_without_nuls(path, ctx)
        elif fmt == "empty":
            ctx.add(finding("empty-file", "empty file", **ctx.base))
        elif fmt == "csv":
            read_csv(path, sn, ctx)
        elif fmt == "parquet":
            read_parquet(path, ctx)
        elif fmt == "arrow":
            read_arrow(path, ctx)
        elif fmt == "excel":
            read_excel(path, ctx)
        elif fmt == "json":
            read_json(path, ctx)
        elif fmt == "jsonl":
            read_jsonl(path, ctx)
        elif fmt == "notebook":
            read_notebook(path, ctx)
        elif fmt in ("netcdf", "zarr"):
            read_xarray(path, fmt, sn.detail, ctx)
        elif fmt == "zip":
            read_zip(path, ctx, _dispatch)
        elif fmt == "gzip":
            read_gzip(path, ctx, _dispatch)
        elif fmt == "html":
            read_html(path, sn, ctx)
        elif fmt == "text":
            read_text(path, sn.encoding, ctx, sn.detail or "plain text")
        else:  # pragma: no cover - sniff returns only the formats above
            ctx.add(finding("unjudgeable-format", f"format {fmt!r} is not checked", **ctx.base))
    except MemoryError:
        ctx.add(finding("reader-error", "out of memory while reading", **ctx.base))
    except RecursionError:
        ctx.add(finding("reader-error", "structure nested too deeply to read", **ctx.base))
    except Exception as e:  # noqa: BLE001 - fail closed: any reader error goes to review
        log.debug("reader error on %s", path, exc_info=True)
        ctx.add(finding("reader-error", f"cannot read as {fmt}: {type(e).__name__}: "
                        f"{str(e)[:300]}", **ctx.base))
    if ctx.judged == 0 and not any(f.severity != Severity.INFO for f in ctx.findings):
        ctx.add(finding("ambiguous-layout", "nothing in this file could be judged", **ctx.base))
    return fmt


#: largest text file with stray NUL bytes that is cleaned and read again
MAX_NUL_CLEAN_BYTES = 1024 * 1024 * 1024


def _read_without_nuls(path: Path, ctx: Ctx) -> None:
    """A text file made to sniff as binary by a few NUL bytes: read it without them.

    The file keeps its ``review`` (its bytes are not what they claim), but rows
    in it are judged, so row-level data blocks."""
    if path.stat().st_size > MAX_NUL_CLEAN_BYTES:
        return
    with tempfile.TemporaryDirectory(prefix="ecluse-nul-") as tmp:
        clean = Path(tmp) / "clean"
        with open(path, "rb") as src, open(clean, "wb") as dst:
            while chunk := src.read(4 * 1024 * 1024):
                dst.write(chunk.replace(b"\x00", b""))
        sub = ctx.sub({**ctx.base, "part": "text without its NUL bytes"})
        if sniff(clean).format == "binary":
            return
        _dispatch(clean, sub)
        ctx.findings.extend(f for f in sub.findings if f.rule != "ambiguous-layout"
                            or f.message != "nothing in this file could be judged")
        ctx.judged += sub.judged
