"""The checkers' queue and the staff's turnaround figures (read-only views).

:func:`queue_view` takes the queue the service lists for a checker
(:meth:`~.service.AirlockService.list_requests`, which decides what they may
see) and adds each request's *risk* — the worst verdict of its current files,
``block`` > ``fail`` > ``review`` > ``pass`` (:meth:`ecluse.sdc.report.Verdict.worst`)
— and its age; sorts it by age or by risk; filters it by project, status and
verdict; counts what each filter would keep; and lists each checker's
pending work.

:func:`turnaround` measures, for platform staff, the time from a request's
submission to the checkers' decision — the first change of state, after a
``submit`` or ``resubmit``, to ``approved``, ``changes_requested`` or
``rejected`` — as median and 90th percentile (nearest rank), per project and
per month of the decision. Both read the database only.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from ..sdc.report import Verdict
from .errors import InvalidInput, PermissionDenied
from .models import FileDecision, Request, Review, as_utc
from .permissions import Identity
from .rules import REVIEWABLE_STATES, State

#: the sort orders of the queue: oldest first, or worst verdict first (then oldest)
SORTS = ("age", "risk")
VERDICTS = tuple(v.value for v in Verdict)
#: states that end a review round (the decision a turnaround is measured to)
DECIDED = (State.APPROVED.value, State.CHANGES_REQUESTED.value, State.REJECTED.value)
SUBMISSIONS = ("submit", "resubmit")


def _since(ts: str | None, now: datetime) -> float:
    if not ts:
        return 0.0
    return max(0.0, (now - datetime.fromisoformat(ts)).total_seconds())


def risks(service: Any, ids: Iterable[str]) -> dict[str, str]:
    """The worst verdict of the current (non-supporting included) files of each request."""
    ids = list(ids)
    if not ids:
        return {}
    with service.sessions() as s:
        rows = s.scalars(select(Request).where(Request.id.in_(ids))
                         .options(selectinload(Request.files))).all()
        return {r.id: str(Verdict.worst(f.verdict for f in r.current_files()
                                        if f.verdict in VERDICTS)) for r in rows}


def pending_work(service: Any, me: Identity) -> list[dict[str, Any]]:
    """Each checker known to the airlock (anyone who reviewed or decided a file, and
    ``me``): ``started`` — requests awaiting review where they decided files of the
    current version but gave no review yet — and ``awaiting`` — requests awaiting
    review they neither reviewed nor made (their project memberships, which the airlock
    does not know for others, are not taken into account)."""
    with service.sessions() as s:
        rows = s.scalars(
            select(Request).where(Request.state.in_([x.value for x in REVIEWABLE_STATES]))
            .options(selectinload(Request.reviews), selectinload(Request.file_decisions))
        ).all()
        everyone: set[str] = {me.name} if me.is_checker else set()
        everyone |= set(s.scalars(select(Review.reviewer).distinct()).all())
        everyone |= set(s.scalars(select(FileDecision.reviewer).distinct()).all())
        out = []
        for name in sorted(everyone):
            started = awaiting = 0
            for r in rows:
                reviewed = any(v.reviewer == name for v in r.current_reviews())
                decided = any(d.reviewer == name for d in r.current_file_decisions())
                if reviewed or r.requester == name:
                    continue
                awaiting += 1
                started += decided
            out.append({"checker": name, "awaiting": awaiting, "started": started,
                        "you": name == me.name})
        return out


def queue_view(service: Any, me: Identity, queue: list[dict[str, Any]], *,
               sort: str = "age", project: str = "", state: str = "", verdict: str = "",
               now: datetime | None = None) -> dict[str, Any]:
    """The queue sorted and filtered, with counts per project, state and verdict (of
    the whole queue) and each checker's pending work."""
    if sort not in SORTS:
        raise InvalidInput(f"sort: expected one of {', '.join(SORTS)}")
    if verdict and verdict not in VERDICTS:
        raise InvalidInput(f"verdict: expected one of {', '.join(VERDICTS)}")
    if state and state not in State._value2member_map_:
        raise InvalidInput(f"state: expected one of {', '.join(x.value for x in State)}")
    now = now or datetime.now(UTC)
    risk = risks(service, [r["id"] for r in queue])
    rows = []
    for r in queue:
        row = dict(r, risk=risk.get(r["id"], "review"))
        row["age_seconds"] = _since(r.get("submitted_at") or r["updated_at"], now)
        rows.append(row)
    counts = {
        "total": len(rows),
        "project": Counter(r["project"] for r in rows),
        "state": Counter(r["state"] for r in rows),
        "verdict": Counter(r["risk"] for r in rows),
    }
    shown = [r for r in rows if (not project or r["project"] == project)
             and (not state or r["state"] == state) and (not verdict or r["risk"] == verdict)]
    if sort == "risk":
        shown.sort(key=lambda r: (-Verdict(r["risk"]).rank, -r["age_seconds"]))
    else:
        shown.sort(key=lambda r: -r["age_seconds"])
    return {"rows": shown, "counts": counts, "sort": sort,
            "filters": {"project": project, "state": state, "verdict": verdict},
            "pending": pending_work(service, me)}


# ---------------------------------------------------------------- turnaround


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile by nearest rank (``p`` in 0–100] of non-empty ``values``."""
    ordered = sorted(values)
    k = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[k - 1]


def summarise(hours: list[float]) -> dict[str, Any]:
    return {"count": len(hours), "median_hours": round(statistics.median(hours), 2),
            "p90_hours": round(percentile(hours, 90), 2)}


def decisions(service: Any) -> list[dict[str, Any]]:
    """Every review round decided: ``{"request", "project", "submitted", "decided",
    "hours", "month", "outcome"}``, from the requests' history."""
    out = []
    with service.sessions() as s:
        rows = s.scalars(select(Request).where(Request.state != State.DRAFT.value)
                         .options(selectinload(Request.history))).all()
        for r in rows:
            submitted: datetime | None = None
            for h in sorted(r.history, key=lambda h: (as_utc(h.ts), h.id)):
                ts = as_utc(h.ts)
                if h.action in SUBMISSIONS:
                    submitted = ts
                elif submitted is not None and h.to_state in DECIDED \
                        and h.from_state != h.to_state:
                    out.append({"request": r.id, "project": r.project,
                                "submitted": submitted.isoformat(),
                                "decided": ts.isoformat(), "outcome": h.to_state,
                                "hours": (ts - submitted).total_seconds() / 3600,
                                "month": ts.strftime("%Y-%m")})
                    submitted = None
    return out


def turnaround(service: Any, me: Identity) -> dict[str, Any]:
    """Median and 90th percentile hours from submission to decision, overall, per
    project, per month, and per project and month (platform staff only)."""
    if not me.is_staff:
        raise PermissionDenied("the turnaround figures are for platform staff only")
    rounds = decisions(service)
    by: dict[str, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for d in rounds:
        by["project"][d["project"]].append(d["hours"])
        by["month"][d["month"]].append(d["hours"])
        by["project_month"][(d["project"], d["month"])].append(d["hours"])
    return {
        "overall": summarise([d["hours"] for d in rounds]) if rounds else None,
        "per_project": [{"project": k, **summarise(v)} for k, v in sorted(by["project"].items())],
        "per_month": [{"month": k, **summarise(v)} for k, v in sorted(by["month"].items())],
        "per_project_month": [{"project": k[0], "month": k[1], **summarise(v)}
                              for k, v in sorted(by["project_month"].items())],
    }
