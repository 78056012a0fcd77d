"""``ecluse packages allow|list|revoke``: a project's allow-list, every change audited."""

from __future__ import annotations

import json

from ecluse.audit import AuditLog
from ecluse.auditevents import AuditEvent
from ecluse.cli import main
from ecluse.config import load_settings
from tests.mirror.conftest import upstream, write_config  # noqa: F401 - the fixture


def _events(cfg) -> list:
    return [r for r in AuditLog.from_settings(load_settings(str(cfg)), writer=False).records()
            if r.event.startswith("mirror.")]


def test_allow_list_revoke_are_audited(tmp_path, upstream, capsys):  # noqa: F811
    cfg = write_config(tmp_path, upstream=upstream.url)
    assert main(["packages", "--config", str(cfg), "allow", "cardio-los", "alpha==1.0"]) == 0
    assert main(["packages", "--config", str(cfg), "list", "cardio-los", "--json"]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out[out.index("{"):])
    assert listed["alpha"]["closure"] == {"alpha": "1.0", "beta": "1.0"}
    assert listed["alpha"]["by"].startswith("cli:")
    assert main(["packages", "--config", str(cfg), "revoke", "cardio-los", "Alpha"]) == 0
    allowed, revoked = _events(cfg)
    assert allowed.event == AuditEvent.MIRROR_PACKAGE_ALLOWED
    assert allowed.project == "cardio-los" and allowed.outcome == "success"
    assert allowed.details["closure"] == {"alpha": "1.0", "beta": "1.0"}
    assert revoked.event == AuditEvent.MIRROR_PACKAGE_REVOKED
    assert revoked.details["package"] == "alpha"


def test_a_failed_allow_is_audited_and_allows_nothing(tmp_path, upstream, capsys):  # noqa: F811
    cfg = write_config(tmp_path, upstream=upstream.url)
    assert main(["packages", "--config", str(cfg), "allow", "cardio-los", "alpha==9.9"]) == 1
    assert "cannot resolve alpha==9.9" in capsys.readouterr().err
    (event,) = _events(cfg)
    assert event.outcome == "failure" and "alpha==9.9" in event.details["error"]
    assert main(["packages", "--config", str(cfg), "list", "cardio-los"]) == 0
    assert "no package allowed" in capsys.readouterr().out


def test_bad_input_is_refused_before_anything(tmp_path, upstream, capsys):  # noqa: F811
    cfg = write_config(tmp_path, upstream=upstream.url)
    assert main(["packages", "--config", str(cfg), "allow", "nosuch", "alpha"]) == 2
    assert "no project 'nosuch'" in capsys.readouterr().err
    assert main(["packages", "--config", str(cfg), "allow", "cardio-los", "alpha>=1"]) == 2
    assert "other specifiers are refused" in capsys.readouterr().err
    assert upstream.paths == []
