"""docs/airlock.md lists every transition and every setting (no drift)."""

from __future__ import annotations

from pathlib import Path

from ecluse.airlock.rules import EVENTS, TRANSITIONS
from ecluse.settings.airlock import AirlockSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "airlock.md"


def test_transition_table_matches_the_rules():
    text = DOC.read_text()
    for t in TRANSITIONS:
        who = ", ".join(sorted(a.value for a in t.actors))
        row = (f"| `{t.action.value}` | `{t.source.value}` | `{t.target.value}` | {who} | "
               f"`{t.event}` |")
        assert row in text, row
    for event in EVENTS.values():
        assert f"`{event}`" in text, event


def test_every_setting_is_documented():
    text = DOC.read_text()
    for name in AirlockSettings.model_fields:
        assert f"| `{name}` |" in text, name
