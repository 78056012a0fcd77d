"""Audit event names are one enumeration: what src/ records, what the docs list."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

from ecluse.auditevents import AuditEvent, reference

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ecluse"
DOC = ROOT / "docs" / "reference" / "audit-events.md"


def _tool():
    """tools/audit_events.py: the scan the lead re-runs after a merge."""
    name = "ecluse_tools_audit_events"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "audit_events.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(PACKAGE.rglob("*.py"))
            if p.name != "auditevents.py"]


EVENTS = {e.value: e.name for e in AuditEvent}


def test_nothing_in_src_records_a_name_that_is_not_a_member():
    tool = _tool()
    found = [f"{p.relative_to(ROOT)}:{line}: {text}" for p, tree in _sources()
             for line, text in tool.unknown_events(tree, EVENTS)]
    assert not found, "recorded events that are not AuditEvent members (add them): " + \
        "; ".join(found)


def test_call_sites_use_the_members_not_string_literals():
    tool = _tool()
    found = [f"{p.relative_to(ROOT)}:{n.lineno}: {n.value!r}" for p, tree in _sources()
             for n in tool._literals(tree, EVENTS)]
    assert not found, "run tools/audit_events.py: " + "; ".join(found)


def test_every_member_is_recorded_somewhere():
    used = {n.attr for _, tree in _sources() for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "AuditEvent"}
    assert {e.name for e in AuditEvent} - used == set()


def test_a_members_name_is_its_value():
    # tools/audit_events.py turns a literal into a member by this rule
    assert [e.name for e in AuditEvent] == [v.upper().replace(".", "_") for v in EVENTS]
    assert all(e.doc for e in AuditEvent)


def test_the_docs_event_list_is_the_enumeration():
    assert DOC.read_text() == reference(), \
        "regenerate: python -m ecluse.auditevents > docs/reference/audit-events.md"


@pytest.mark.parametrize("source", [
    'audit.record("login.succes", actor="a")',
    'self._audit(f"workspace.{what}", outcome="failure")',
    'KEYED_EVENT = "audit.keyd"',
])
def test_the_scan_finds_a_name_that_is_not_a_member(source):
    assert _tool().unknown_events(ast.parse(source), EVENTS)
