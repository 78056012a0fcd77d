"""The machine-readable result of an output check, and its human rendering.

A :class:`FileReport` is what the airlock stores for each file of an export
request: the verdict, the detected format, the findings (each with a rule id,
a severity, a message and a location) and the policy values used. It
round-trips through :meth:`FileReport.to_dict` / :meth:`FileReport.from_dict`.

Verdicts combine by severity, most severe first::

    block > fail > review > pass

``fail`` outranks ``review``: a ``fail`` is a certain, located disclosure the
researcher must fix before anything leaves, whereas ``review`` only says that a
person has to look. When a request holds both, the researcher needs the
``fail`` to act on; the ``review`` findings stay in the report so the checker
still sees them. Neither is ever releasable without a human decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """Outcome of checking one file (or a set of files)."""

    PASS = "pass"
    REVIEW = "review"
    FAIL = "fail"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def worst(cls, verdicts: Iterable[Verdict]) -> Verdict:
        """The most severe of ``verdicts`` (``pass`` for none)."""
        out = cls.PASS
        for v in verdicts:
            v = cls(v)
            if v.rank > out.rank:
                out = v
        return out


_RANK = {Verdict.PASS: 0, Verdict.REVIEW: 1, Verdict.FAIL: 2, Verdict.BLOCK: 3}


class Severity(StrEnum):
    """Severity of one finding; every severity but ``info`` implies a verdict."""

    INFO = "info"
    REVIEW = "review"
    FAIL = "fail"
    BLOCK = "block"

    @property
    def verdict(self) -> Verdict:
        return Verdict.PASS if self is Severity.INFO else Verdict(self.value)


@dataclass
class Finding:
    """One observation: ``rule`` id (see :data:`ecluse.sdc.rules.RULES`), severity,
    a message for the researcher and checker, and where it was found."""

    rule: str
    severity: Severity
    message: str
    location: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": str(self.severity),
            "message": self.message,
            "location": dict(self.location),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            rule=str(data["rule"]),
            severity=Severity(data["severity"]),
            message=str(data["message"]),
            location=dict(data.get("location") or {}),
        )


@dataclass
class FileReport:
    """The check result of one file."""

    path: str
    format: str
    verdict: Verdict
    findings: list[Finding] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "verdict": str(self.verdict),
            "format": self.format,
            "findings": [f.to_dict() for f in self.findings],
            "policy": dict(self.policy),
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileReport:
        return cls(
            path=str(data["path"]),
            format=str(data["format"]),
            verdict=Verdict(data["verdict"]),
            findings=[Finding.from_dict(f) for f in data.get("findings") or []],
            policy=dict(data.get("policy") or {}),
            details=dict(data.get("details") or {}),
        )

    @staticmethod
    def verdict_of(findings: Iterable[Finding]) -> Verdict:
        return Verdict.worst(Severity(f.severity).verdict for f in findings)


@dataclass
class Report:
    """The check results of several files (one export request)."""

    files: list[FileReport] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return Verdict.worst(f.verdict for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": str(self.verdict), "files": [f.to_dict() for f in self.files]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(files=[FileReport.from_dict(f) for f in data.get("files") or []])

    def render(self, max_findings: int = 20) -> str:
        """A plain-text table for people: one line per file, its findings below."""
        return render_text(self.files, max_findings=max_findings)


def format_location(loc: dict[str, Any]) -> str:
    """``member a.csv, sheet S, row 4, column n (B4)`` — a short human form."""
    parts = []
    for key in ("member", "sheet", "cell_index", "output", "part", "table", "variable"):
        if key in loc:
            parts.append(f"{key.replace('_', ' ')} {loc[key]}")
    if "row" in loc:
        parts.append(f"row {loc['row']}")
    if "column" in loc:
        parts.append(f"column {loc['column']!s}")
    if "cell" in loc:
        parts.append(f"({loc['cell']})")
    if "index" in loc:
        parts.append(f"index {loc['index']}")
    if "labels" in loc and loc["labels"]:
        parts.append("[" + ", ".join(f"{k}={v}" for k, v in loc["labels"].items()) + "]")
    return " ".join(parts)


def render_text(files: Iterable[FileReport], max_findings: int = 20) -> str:
    files = list(files)
    width = max([len("file")] + [len(f.path) for f in files])
    lines = [f"{'verdict':7}  {'format':9}  {'file':{width}}  findings"]
    lines.append("-" * len(lines[0]))
    for f in files:
        lines.append(f"{f.verdict.value:7}  {f.format:9}  {f.path:{width}}  {len(f.findings)}")
        for i, fd in enumerate(f.findings):
            if i >= max_findings:
                lines.append(f"    … {len(f.findings) - max_findings} more findings (use --json)")
                break
            where = format_location(fd.location)
            lines.append(f"    {fd.severity.value:6} {fd.rule:24} {fd.message}")
            if where:
                lines.append(f"           {'':24} at {where}")
    overall = Verdict.worst(f.verdict for f in files)
    lines.append(f"overall: {overall.value} ({len(files)} file{'s' if len(files) != 1 else ''})")
    packs = sorted({str(f.policy["pack"]) for f in files if f.policy.get("pack")})
    if packs:
        lines.append(f"policy pack: {', '.join(packs)}")
    return "\n".join(lines)
