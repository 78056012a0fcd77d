"""The review pages' helpers: template functions, the sorted queue, the turnaround page.

* :func:`setup_jinja` — the airlock's Jinja environment gets ``jinja2.ext.i18n``
  (null translations until the catalogues are installed) and
  :func:`finding_target`, the id of the preview cell a finding points at (the
  list of findings links to it);
* :func:`home_queue` — the checker's queue as ``home.html`` shows it, sorted
  by age or risk and filtered (query arguments ``sort``, ``project``,
  ``state``, ``verdict``), with counts and each checker's pending work
  (:mod:`ecluse.airlock.queue`);
* :class:`TurnaroundPage` — ``/turnaround``: median and 90th percentile time
  from submission to decision, per project and per month; platform staff only
  (403 for everyone else, checkers included).
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment
from tornado import web

from .. import queue
from ..preview import Preview, _mark
from .base import BaseHandler


def finding_target(finding: dict[str, Any], preview: dict[str, Any] | None,
                   file_id: int) -> str | None:
    """``cell-<file>-<row>-<col>`` (a data cell) or ``cell-<file>-h-<col>`` (a column's
    header) of the stored table preview ``finding`` points at, or None when the preview
    does not show it."""
    if not preview or preview.get("kind") != "table" or not isinstance(finding, dict):
        return None
    columns = list(preview.get("columns") or [])
    probe = Preview(columns=columns, sheet=preview.get("sheet"))
    _mark(probe, [finding], header_rows=int(preview.get("header_rows", 1)))
    rows = preview.get("rows") or []
    masked = set(preview.get("masked_columns") or [])
    for r, c in sorted(probe.flagged):
        if r < len(rows) and c < len(columns) and c not in masked:
            return f"cell-{file_id}-{r}-{c}"
    for c in sorted(probe.flagged_columns):
        if c < len(columns):
            if len(preview.get("header") or []) > 1:
                return f"cell-{file_id}-0-{c}" if rows else None
            return f"cell-{file_id}-h-{c}"
    return None


def setup_jinja(env: Environment) -> None:
    if "jinja2.ext.InternationalizationExtension" not in env.extensions:
        env.add_extension("jinja2.ext.i18n")
        env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    env.globals["finding_target"] = finding_target


async def home_queue(handler: BaseHandler, me: Any, rows: list[dict[str, Any]]) -> dict:
    args = {k: handler.get_query_argument(k, "") for k in ("project", "state", "verdict")}
    sort = handler.get_query_argument("sort", "age") or "age"
    return await handler.run(lambda: queue.queue_view(handler.service, me, rows, sort=sort,
                                                      **args))


class TurnaroundPage(BaseHandler):
    """Time from submission to decision, for platform staff."""

    @web.authenticated
    async def get(self) -> None:
        me = self.require_identity()
        figures = await self.run(queue.turnaround, self.service, me)
        self.finish(self.render_template("turnaround.html", t=figures))
