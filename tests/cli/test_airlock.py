"""``ecluse airlock migrate`` and ``ecluse airlock list`` on a real config."""

from __future__ import annotations

import yaml

from ecluse.cli import main
from tests.airlock.hubstack import ECLUSE_YAML, PROJECTS


def write_config(folder, **sections):
    """``ecluse.yaml`` (ECLUSE_YAML, ``sections`` replaced) and its projects.yaml."""
    (folder / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
    cfg = folder / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump({**ECLUSE_YAML, **sections}))
    return cfg

def test_migrate_then_list(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["airlock", "--config", str(cfg), "migrate"]) == 0
    from ecluse.airlock.db import head_revision

    assert f"revision {head_revision()}" in capsys.readouterr().out
    assert (tmp_path / "state" / "airlock" / "airlock.sqlite").exists()
    assert main(["airlock", "list", "--config", str(cfg), "--json"]) == 0
    assert capsys.readouterr().out == ""
    assert oct((tmp_path / "state" / "airlock").stat().st_mode & 0o777) == oct(0o700)


def test_serve_outside_the_hub_says_what_is_missing(tmp_path, capsys, monkeypatch):
    for k in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_SERVICE_PREFIX"):
        monkeypatch.delenv(k, raising=False)
    cfg = write_config(tmp_path)
    assert main(["airlock", "serve", "--config", str(cfg)]) == 2
    assert "JupyterHub-managed service: missing JUPYTERHUB_API_TOKEN" in capsys.readouterr().err


def test_purge_command_deletes_old_withdrawn_files_and_audits(tmp_path, capsys):
    """``ecluse airlock purge`` (cron) purges what the service's hourly task would."""
    from datetime import timedelta

    from sqlalchemy import update

    from ecluse.airlock.models import Request, utcnow
    from ecluse.airlock.service import AirlockService
    from ecluse.audit import AuditLog
    from ecluse.config import load_settings

    cfg = write_config(tmp_path)
    settings = load_settings(str(cfg))
    service = AirlockService.from_settings(settings)
    try:
        alice = service.identity("alice", ["cardio-los"])
        rid = service.create_request(alice, project="cardio-los", title="t",
                                     justification="j")["id"]
        sha = service.add_file(alice, rid, "t.csv", [b"sex,n\nF,25\nM,31\n"])["sha256"]
        service.withdraw(alice, rid)
        with service.engine.begin() as conn:  # withdrawn 31 days ago
            conn.execute(update(Request).where(Request.id == rid)
                         .values(updated_at=utcnow() - timedelta(days=31)))
        path = service.staging.path_for(sha)
    finally:
        service.close()
    capsys.readouterr()
    assert main(["airlock", "purge", "--config", str(cfg), "--dry-run"]) == 0
    assert f"would purge {rid}" in capsys.readouterr().out and path.exists()
    assert main(["airlock", "purge", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"purged {rid}" in out and "1 file(s) deleted" in out and not path.exists()
    audit = AuditLog.from_settings(settings)
    try:
        events = audit.records(event="airlock.request.purged")
        assert [e.details["request_id"] for e in events] == [rid]
        assert events[0].actor.startswith("cli:") and events[0].details["deleted"] == [sha]
    finally:
        audit.engine.dispose()


def test_checks_are_sandboxed_on_the_airlock_host_whatever_runs_workspaces(tmp_path):
    """Workspaces in Docker (the production default): the airlock still inspects files
    in local one-shot sandboxes on its own host, never in its own processes."""
    from ecluse.airlock.checkbox import SandboxChecker
    from ecluse.airlock.service import AirlockService
    from ecluse.config import load_settings
    from ecluse.sandbox.local import LocalSandbox

    cfg = write_config(tmp_path, sandbox={"backend": "docker"})
    service = AirlockService.from_settings(load_settings(str(cfg)), process_checks=True)
    try:
        assert isinstance(service.checker, SandboxChecker)
        assert isinstance(service.checker.backend, LocalSandbox)
    finally:
        service.close()


def test_verify_release_checks_a_package_against_the_audit_log(tmp_path, capsys):
    """``ecluse airlock verify-release PACKAGE``: 0 as released, 1 with each problem."""
    import zipfile

    from ecluse.airlock.service import AirlockService
    from ecluse.audit import AuditLog
    from ecluse.config import load_settings

    cfg = write_config(tmp_path)
    settings = load_settings(str(cfg))
    audit = AuditLog.from_settings(settings)
    service = AirlockService.from_settings(settings, audit=audit)
    try:
        alice = service.identity("alice", ["cardio-los"])
        checkers = [service.identity(n, ["output-checkers"]) for n in ("carol", "dan")]
        rid = service.create_request(alice, project="cardio-los", title="t",
                                     justification="j")["id"]
        service.add_file(alice, rid, "t.csv", b"sex,n\nF,25\nM,31\n".splitlines(True))
        service.submit(alice, rid)
        for c in checkers:
            service.review(c, rid, decision="approve")
        service.release(checkers[0], rid)
        content = service.release_package(alice, rid)
        pkg = tmp_path / "release.zip"
        pkg.write_bytes(b"".join(content.chunks))
    finally:
        service.close()
        audit.engine.dispose()
    capsys.readouterr()
    assert main(["airlock", "verify-release", "--config", str(cfg), str(pkg)]) == 0
    assert f"request {rid}, 1 file(s): as released" in capsys.readouterr().out
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(pkg) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, b"sex,n\nF,2\n" if name == "files/t.csv" else zin.read(name))
    assert main(["airlock", "verify-release", "--config", str(cfg), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"request {rid}: NOT as released" in err and "files/t.csv: sha256" in err
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert main(["airlock", "verify-release", "--config", str(cfg),
                 str(tmp_path / "junk.zip")]) == 2
    assert "not a readable zip file" in capsys.readouterr().err
