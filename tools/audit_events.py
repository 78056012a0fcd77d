#!/usr/bin/env python3
"""Turn audit event string literals in ``src/ecluse`` into ``AuditEvent`` members.

Re-runnable and idempotent (issue 16 item 6): every string literal in
``src/ecluse`` whose value is an event of :class:`ecluse.auditevents.AuditEvent`
becomes ``AuditEvent.<NAME>`` and the module gains the import; a second run
changes nothing. It then regenerates ``docs/reference/audit-events.md``.

It reports, and leaves alone, what it cannot convert: a dotted literal or an
f-string given as the event of a record call (``record``, ``_record``,
``_audit``, ``_later``) or assigned to a ``*_EVENT``
name, in ``src/`` or ``tests/``, that is not a member. Add such an event to
the enumeration (name = value upper-cased, dots as underscores) and run again.

    python tools/audit_events.py [--check] [ROOT]

``--check`` changes nothing and exits 1 when something would change or was
reported. Exit 1 as well when a literal was reported.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: calls whose event argument is at this position
RECORD_CALLS = {"record": 0, "_record": 0, "_audit": 0, "_later": 1}
DOTTED = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)+")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    text: str


def _events(root: Path) -> dict[str, str]:
    sys.path.insert(0, str(root / "src"))
    from ecluse.auditevents import AuditEvent

    return {e.value: e.name for e in AuditEvent}


def _callee(call: ast.Call) -> str | None:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def event_arguments(tree: ast.AST) -> list[ast.expr]:
    """The expressions given as an audit event name in ``tree``."""
    out: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _callee(node)
            pos = RECORD_CALLS.get(name or "")
            if pos is not None and len(node.args) > pos:
                out.append(node.args[pos])
            if name in RECORD_CALLS:
                out += [k.value for k in node.keywords if k.arg == "event"]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(
                    isinstance(t, ast.Name) and t.id.endswith("EVENT") for t in targets):
                out.append(node.value)
    return out


def unknown_events(tree: ast.AST, events: dict[str, str]) -> list[tuple[int, str]]:
    """(line, text) of each literal or f-string event name that is not a member."""
    found = []
    for arg in event_arguments(tree):
        if isinstance(arg, ast.JoinedStr):
            found.append((arg.lineno, f"f-string {ast.unparse(arg)}"))
        elif (isinstance(arg, ast.Constant) and isinstance(arg.value, str)
              and DOTTED.fullmatch(arg.value) and arg.value not in events):
            found.append((arg.lineno, repr(arg.value)))
    return found


def _literals(tree: ast.AST, events: dict[str, str]) -> list[ast.Constant]:
    inside_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)
                       for v in n.values}
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value in events and id(n) not in inside_fstrings]


def _import_line(path: Path, package: Path) -> str:
    depth = len(path.relative_to(package).parts) - 1
    return f"from {'.' * (depth + 1)}auditevents import AuditEvent\n"


def _has_import(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.ImportFrom) and (n.module or "").endswith("auditevents")
               and any(a.name == "AuditEvent" for a in n.names) for n in tree.body)


def convert(path: Path, package: Path, events: dict[str, str]) -> str | None:
    """The converted source of ``path``, or None when nothing changes."""
    source = path.read_text()
    tree = ast.parse(source)
    nodes = _literals(tree, events)
    if not nodes:
        return None
    lines = source.splitlines(keepends=True)
    for n in sorted(nodes, key=lambda n: (n.lineno, n.col_offset), reverse=True):
        if n.lineno != n.end_lineno:
            continue  # an implicitly concatenated literal: leave it to a human
        line = lines[n.lineno - 1].encode()
        member = f"AuditEvent.{events[n.value]}".encode()
        lines[n.lineno - 1] = (line[:n.col_offset] + member + line[n.end_col_offset:]).decode()
    if not _has_import(tree):
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        at = imports[-1].end_lineno if imports else (
            tree.body[0].end_lineno if ast.get_docstring(tree) else 0)
        lines.insert(at, _import_line(path, package))
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if needed")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    package = root / "src" / "ecluse"
    events = _events(root)
    changed: list[Path] = []
    unknown: list[Finding] = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "auditevents.py":
            continue
        new = convert(path, package, events)
        if new is not None:
            changed.append(path)
            if not args.check:
                path.write_text(new)
    for path in sorted([*package.rglob("*.py"), *(root / "tests").rglob("*.py")]):
        tree = ast.parse(path.read_text())
        unknown += [Finding(path, line, text) for line, text in unknown_events(tree, events)]
    if changed and not args.check:
        ruff = root / ".venv" / "bin" / "ruff"
        subprocess.run([str(ruff) if ruff.exists() else "ruff", "check", "-q", "--fix",
                        "--select", "I", *map(str, changed)], check=False)
    doc = root / "docs" / "reference" / "audit-events.md"
    from ecluse.auditevents import reference

    doc_stale = not doc.exists() or doc.read_text() != reference()
    if doc_stale and not args.check:
        doc.write_text(reference())
    verb = "would convert" if args.check else "converted"
    for path in changed:
        print(f"{verb}: {path.relative_to(root)}")
    if doc_stale:
        print(f"{'stale' if args.check else 'regenerated'}: {doc.relative_to(root)}")
    for f in unknown:
        print(f"not an AuditEvent member: {f.path.relative_to(root)}:{f.line}: {f.text}")
    if unknown:
        return 1
    return 1 if args.check and (changed or doc_stale) else 0


if __name__ == "__main__":
    sys.exit(main())
