"""Archives (zip, gzip): opened recursively within limits, each member checked.

Limits come from the policy: nesting depth, member count, uncompressed size
per member and in all, and compression ratio. Sizes declared in the archive
are checked first, then enforced again while extracting (declared sizes can
lie). Crossing a limit is an ``archive-limit`` finding (review): the archive
is never passed, and never crashes the checker.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .carriers import CheckFn, Ctx, _check_member, judge_value
from .rules import finding

CHUNK = 1024 * 1024


class _Limit(Exception):
    pass


def _copy_limited(src, dst, limit: int, ratio_base: int, max_ratio: float) -> int:  # type: ignore[no-untyped-def]
    written = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return written
        written += len(chunk)
        if written > limit:
            raise _Limit(f"more than {limit} bytes once uncompressed")
        if ratio_base and written > 10 * CHUNK and written / ratio_base > max_ratio:
            raise _Limit(f"compression ratio over {max_ratio:g}")
        dst.write(chunk)


def read_zip(path: Path, ctx: Ctx, check: CheckFn) -> None:
    pol = ctx.policy
    if ctx.depth >= pol.archive_max_depth:
        ctx.add(finding("archive-limit", f"archive nested deeper than {pol.archive_max_depth} "
                        "levels is not opened", **ctx.base))
        return
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        ctx.details["members"] = len(infos)
        if len(infos) > pol.archive_max_members:
            ctx.add(finding("archive-limit", f"{len(infos)} members, more than "
                            f"{pol.archive_max_members}", **ctx.base))
            return
        declared = sum(i.file_size for i in infos)
        if declared > pol.archive_max_total_bytes:
            ctx.add(finding("archive-limit", f"{declared} bytes once uncompressed, more than "
                            f"{pol.archive_max_total_bytes}", **ctx.base))
            return
        # the archive's comment and its members' comments and extra fields carry data too
        if zf.comment:
            judge_value(zf.comment, ctx, "zip comment")
        for i in infos:
            if i.comment:
                judge_value(i.comment, ctx, f"zip comment of {_member_name(ctx, i.filename)}")
            if len(i.extra) > 1024:
                ctx.add(finding("unjudgeable-format", f"member {_member_name(ctx, i.filename)} "
                                f"carries {len(i.extra)} bytes of extra fields", **ctx.base))
        if not infos:
            ctx.add(finding("empty-file", "archive without members", **ctx.base))
            return
        total = 0
        with tempfile.TemporaryDirectory(prefix="ecluse-zip-") as tmp:
            for k, info in enumerate(infos):
                name = info.filename
                member = _member_name(ctx, name)
                loc = {**ctx.base, "member": member}
                if info.flag_bits & 0x1:
                    ctx.add(finding("archive-limit", "encrypted member cannot be checked", **loc))
                    continue
                mode = (info.external_attr >> 16) & 0o170000
                if mode == stat.S_IFLNK:
                    ctx.add(finding("archive-limit", "symbolic link inside the archive", **loc))
                    continue
                if info.file_size > pol.archive_max_member_bytes:
                    ctx.add(finding("archive-limit", f"member of {info.file_size} bytes, more "
                                    f"than {pol.archive_max_member_bytes}", **loc))
                    continue
                if info.compress_size and info.file_size / max(info.compress_size, 1) > \
                        pol.archive_max_ratio and info.file_size > 10 * CHUNK:
                    ctx.add(finding("archive-limit", "compression ratio "
                                    f"{info.file_size / info.compress_size:.0f}, more than "
                                    f"{pol.archive_max_ratio:g}", **loc))
                    continue
                dest = Path(tmp) / f"m{k}"
                try:
                    with zf.open(info) as src, open(dest, "wb") as dst:
                        limit = min(pol.archive_max_member_bytes,
                                    pol.archive_max_total_bytes - total)
                        total += _copy_limited(src, dst, limit, info.compress_size,
                                               pol.archive_max_ratio)
                except _Limit as e:
                    ctx.add(finding("archive-limit", str(e), **loc))
                    dest.unlink(missing_ok=True)
                    if total >= pol.archive_max_total_bytes:
                        break
                    continue
                except Exception as e:  # noqa: BLE001 - a damaged member is reviewed, not fatal
                    ctx.add(finding("reader-error", f"member cannot be extracted: "
                                    f"{type(e).__name__}: {str(e)[:200]}", **loc))
                    dest.unlink(missing_ok=True)
                    continue
                _check_member(dest, ctx, check, member)
                dest.unlink(missing_ok=True)


def _member_name(ctx: Ctx, name: str) -> str:
    clean = str(PurePosixPath(name))
    parent = ctx.base.get("member")
    return f"{parent}!{clean}" if parent else clean


def read_gzip(path: Path, ctx: Ctx, check: CheckFn) -> None:
    pol = ctx.policy
    if ctx.depth >= pol.archive_max_depth:
        ctx.add(finding("archive-limit", "compressed file nested too deep", **ctx.base))
        return
    size = path.stat().st_size
    with tempfile.TemporaryDirectory(prefix="ecluse-gz-") as tmp:
        dest = Path(tmp) / "content"
        try:
            with gzip.open(path, "rb") as src, open(dest, "wb") as dst:
                _copy_limited(src, dst, pol.archive_max_member_bytes, size, pol.archive_max_ratio)
        except _Limit as e:
            ctx.add(finding("archive-limit", f"gzip content: {e}", **ctx.base))
            return
        name = ctx.base.get("member", "")
        _check_member(dest, ctx, check, f"{name}!content" if name else "content")
        shutil.rmtree(tmp, ignore_errors=True)
