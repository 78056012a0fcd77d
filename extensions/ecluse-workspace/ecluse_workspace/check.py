"""``POST /ecluse/check`` ``{"paths": [...]}``: *Check for export*, a dry run.

The paths pass the export rules (:func:`~ecluse_workspace.policy.open_all_for_export`:
allowed folders, regular files, the export limits), then go, in one multipart
body, to the airlock's dry run (``POST /api/v1/check?project=<this project>``)
with the workspace's own token, as ``/ecluse/export`` sends files. The airlock
judges them with the checks, disclosure policy and ledger of a real request and
keeps nothing. The answer:
``200 {"project", "files": [{path, name, size, verdict, findings, more_findings,
preview}]}`` (at most :data:`MAX_FINDINGS` findings a file).

``preview`` is a *small* window of a table, never the table: the rows holding the
cells the findings point at (at most :data:`PREVIEW_ROWS`, with their line number
in the file), at most :data:`PREVIEW_COLUMNS` columns, each cell cut to
:data:`CELL_CHARS` characters; nothing for a file that is not a table. That is
what a notebook's output shows of a data frame (the screen channel,
``docs/threat-model.md``): no file's bytes reach the browser.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from typing import Any
from urllib.parse import quote, urlencode

from jupyter_server.auth.decorator import authorized
from tornado import web

from .export import CHUNK, AirlockError, EcluseHandler
from .policy import ExportFile, Refused, open_all_for_export

#: the most rows, columns and characters per cell of a preview sent to the browser
PREVIEW_ROWS = 12
PREVIEW_COLUMNS = 12
CELL_CHARS = 40
#: the most findings of one file sent to the browser (how many more is said)
MAX_FINDINGS = 50


def _part_head(boundary: str, f: ExportFile) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename*=UTF-8''{quote(f.name, safe='')}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


async def dry_run(client: Any, project: str, files: list[ExportFile]) -> dict[str, Any]:
    """The airlock's dry run of ``files`` for ``project`` (one multipart body, streamed)."""
    boundary = "ecluse-" + secrets.token_hex(16)
    heads = [_part_head(boundary, f) for f in files]
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + f.size + 2 for h, f in zip(heads, files, strict=True)) + len(tail)
    loop = asyncio.get_running_loop()

    async def produce(write: Any) -> None:
        for head, f in zip(heads, files, strict=True):
            await write(head)
            sent = 0
            while sent < f.size:
                chunk = await loop.run_in_executor(None, os.read, f.fd,
                                                   min(CHUNK, f.size - sent))
                if not chunk:
                    raise AirlockError(409, "changed", f"{f.path} shrank while being sent.")
                sent += len(chunk)
                await write(chunk)
            await write(b"\r\n")
        await write(tail)

    return await client.call(
        "POST", "/check?" + urlencode({"project": project}), body_producer=produce,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                 "Content-Length": str(length)},
        timeout=client.timeout)


def small_preview(preview: Any) -> dict[str, Any] | None:
    """The window of a table preview the browser gets (see the module), or ``None``."""
    if not isinstance(preview, dict) or preview.get("kind") != "table":
        return None
    columns = [str(c)[:CELL_CHARS] for c in preview.get("columns") or []]
    rows = preview.get("rows") or []
    flagged = {(int(r), int(c)) for r, c in preview.get("flagged") or []
               if isinstance(r, int) and isinstance(c, int)}
    flagged_cols = {int(c) for c in preview.get("flagged_columns") or [] if isinstance(c, int)}
    masked = {int(c) for c in preview.get("masked_columns") or [] if isinstance(c, int)}
    wanted = sorted({r for r, _ in flagged if r < len(rows)})
    if not wanted:  # nothing pointed at: the first rows show the shape
        wanted = list(range(min(len(rows), 3)))
    keep_rows = wanted[:PREVIEW_ROWS]
    pointed = sorted({c for _, c in flagged} | flagged_cols)
    keep = set(pointed[:PREVIEW_COLUMNS])
    for c in range(len(columns)):
        if len(keep) >= PREVIEW_COLUMNS:
            break
        keep.add(c)
    keep_cols = sorted(keep)
    out_rows = []
    for r in keep_rows:
        row = rows[r] if isinstance(rows[r], list) else []
        out_rows.append([str(row[c])[:CELL_CHARS] if c < len(row) else "" for c in keep_cols])
    return {
        "columns": [columns[c] if c < len(columns) else "" for c in keep_cols],
        # the line of the file each row is on (the header is line 1)
        "lines": [r + 2 for r in keep_rows],
        "rows": out_rows,
        "flagged": [[i, j] for i, r in enumerate(keep_rows) for j, c in enumerate(keep_cols)
                    if (r, c) in flagged or c in flagged_cols],
        "masked": [j for j, c in enumerate(keep_cols) if c in masked],
        "more_rows": len(wanted) > len(keep_rows) or bool(preview.get("truncated")),
        "more_columns": len(columns) > len(keep_cols),
    }


def _finding(x: Any) -> dict[str, Any]:
    x = x if isinstance(x, dict) else {}
    loc = x.get("location") if isinstance(x.get("location"), dict) else {}
    return {"rule": str(x.get("rule") or ""), "severity": str(x.get("severity") or ""),
            "message": str(x.get("message") or "")[:2000],
            "location": {k: loc[k] for k in ("row", "column", "cell", "sheet")
                         if isinstance(loc.get(k), (str, int))}}


class CheckHandler(EcluseHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        try:
            await self._check()
        except Refused as e:
            self.refuse(e)

    async def _check(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            raise Refused(400, "invalid_input", "The body must be a JSON object.") from None
        if not self.conf.project:
            raise Refused(503, "no_project", "This workspace does not belong to a project.")
        root = self.contents_manager.root_dir
        files = await asyncio.get_running_loop().run_in_executor(
            None, lambda: open_all_for_export(
                body.get("paths"), root_dir=root, allowed_roots=self.conf.allowed_roots,
                limits=self.conf.limits()))
        try:
            answer = await dry_run(self.client(), self.conf.project, files)
        finally:
            for f in files:
                f.close()
        judged = answer.get("files") if isinstance(answer, dict) else None
        if not isinstance(judged, list) or len(judged) != len(files):
            raise Refused(502, "airlock_error", "The airlock gave no usable answer.")
        out = []
        for f, j in zip(files, judged, strict=True):
            found = list(j.get("findings") or [])
            out.append({"path": f.path, "name": str(j.get("name") or f.name),
                        "size": f.size, "verdict": str(j.get("verdict") or "review"),
                        "findings": [_finding(x) for x in found[:MAX_FINDINGS]],
                        "more_findings": max(0, len(found) - MAX_FINDINGS),
                        "preview": small_preview(j.get("preview"))})
        self.log.info("check before export: %d files for %s", len(out), self.conf.project)
        self.finish({"project": self.conf.project, "files": out})
