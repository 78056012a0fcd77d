"""``ecluse migrate identities``: a deployment from before canonical hub names.

Built in the old shape, for real: JupyterHub's own database (its ORM, SQLite)
with hub accounts named by login aliases, an airlock database at the schema
before reviewers' DNs were recorded (``0002``) with requests and reviews under
aliases, a keyed audit log with alias actors, and a home folder under an
alias; the directory is the session's slapd, where carol also answers to
``c.petit`` and alice to ``a.martin`` (issue 14, item 5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from ecluse.airlock import db
from ecluse.audit import AuditLog
from ecluse.cli import main
from ecluse.config import load_settings
from ecluse.dev.testing import write_config
from ecluse.directory import normalize_dn
from ecluse.identities import IdentityMigration, MigrationError
from ecluse.people import People
from tests.support.aliases import second_names


@pytest.fixture
def aliases(slapd) -> Iterator[None]:
    with second_names(slapd, {"carol": "c.petit", "alice": "a.martin"}):
        yield


def _old_hub(settings, running: bool = False) -> None:
    """carol and c.petit (one person), a.martin (alice, no account under her uid), ghost."""
    from jupyterhub import orm

    session = orm.new_session_factory(settings.hub_database_url)()
    try:
        carol = orm.User(name="carol")
        c_petit = orm.User(name="c.petit")
        a_martin = orm.User(name="a.martin")
        session.add_all([carol, c_petit, a_martin, orm.User(name="ghost"),
                         orm.OAuthClient(identifier="jupyterhub")])
        session.add(orm.Group(name="cardio-los", users=[a_martin]))
        session.add_all([orm.Spawner(user=carol, name=""), orm.Spawner(user=c_petit, name=""),
                         orm.Spawner(user=c_petit, name="cardio-los")])
        if running:
            sp = orm.Spawner(user=c_petit, name="air-quality")
            sp.server = orm.Server(ip="127.0.0.1", port=1, base_url="/user/c.petit/x/")
            session.add(sp)
        session.commit()
        orm.APIToken.new(user=c_petit, note="old token")
    finally:
        session.close()
        session.get_bind().dispose()


def _hub_users(settings) -> dict[str, dict]:
    from jupyterhub import orm

    session = orm.new_session_factory(settings.hub_database_url)()
    try:
        return {u.name: {"servers": sorted(sp.name for sp in u._orm_spawners),
                         "tokens": len(u.api_tokens),
                         "groups": sorted(g.name for g in u.groups)}
                for u in session.query(orm.User)}
    finally:
        session.close()
        session.get_bind().dispose()


def _old_airlock(settings) -> None:
    """ar-1: a.martin's request, approved by carol and c.petit (one person twice);
    ar-2: alice's, approved once by c.petit."""
    engine = db.make_engine(f"sqlite:///{settings.state_dir / 'airlock' / 'airlock.sqlite'}")
    db.upgrade(engine, "0002_previews_purge")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for rid, requester, state in (("ar-1", "a.martin", "approved"),
                                      ("ar-2", "alice", "in_review")):
            conn.execute(text(
                "INSERT INTO airlock_requests (id, project, requester, title, justification,"
                " state, version, created_at, updated_at) VALUES (:id, 'cardio-los', :r, 't',"
                " 'j', :s, 1, :now, :now)"), {"id": rid, "r": requester, "s": state, "now": now})
            conn.execute(text(
                "INSERT INTO airlock_files (request_id, version, name, sha256, size, verdict,"
                " format, report, uploaded_by, created_at) VALUES (:id, 1, 'n.csv', :sha, 3,"
                " 'pass', 'csv', '{}', :r, :now)"), {"id": rid, "sha": "0" * 64,
                                                     "r": requester, "now": now})
        for rid, reviewer in (("ar-1", "carol"), ("ar-1", "c.petit"), ("ar-2", "c.petit")):
            conn.execute(text(
                "INSERT INTO airlock_reviews (request_id, version, reviewer, decision, comment,"
                " overrides, created_at) VALUES (:id, 1, :r, 'approve', '', '{}', :now)"),
                {"id": rid, "r": reviewer, "now": now})
            conn.execute(text(
                "INSERT INTO airlock_history (request_id, ts, actor, action, from_state,"
                " to_state, version, comment) VALUES (:id, :now, :r, 'approve', 'submitted',"
                " 'in_review', 1, '')"), {"id": rid, "r": reviewer, "now": now})
    engine.dispose()


def _airlock_rows(settings) -> dict[str, list]:
    engine = db.make_engine(f"sqlite:///{settings.state_dir / 'airlock' / 'airlock.sqlite'}")
    try:
        with engine.connect() as conn:
            return {
                "requests": [tuple(r) for r in conn.execute(text(
                    "SELECT id, requester, requester_dn, requester_uid_number, state "
                    "FROM airlock_requests ORDER BY id"))],
                "reviews": [tuple(r) for r in conn.execute(text(
                    "SELECT request_id, reviewer, reviewer_uid_number FROM airlock_reviews "
                    "ORDER BY id"))],
                "actors": sorted({r[0] for r in conn.execute(text(
                    "SELECT actor FROM airlock_history"))}),
                "uploaders": sorted({r[0] for r in conn.execute(text(
                    "SELECT uploaded_by FROM airlock_files"))}),
            }
    finally:
        engine.dispose()


@pytest.fixture
def old_deployment(settings, aliases):
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _old_hub(settings)
    _old_airlock(settings)
    audit = AuditLog.from_settings(settings)
    for actor in ("c.petit", "carol", "a.martin", "c.petit"):
        audit.record("login.success", actor=actor)
    home = settings.projects_root / "cardio-los" / "home" / "a.martin"
    home.mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    yield settings
    audit.engine.dispose()


def test_dry_run_changes_nothing(old_deployment, capsys):
    settings = old_deployment
    hub, count = _hub_users(settings), len(AuditLog.from_settings(settings).records())
    assert main(["migrate", "identities", "--config", str(settings.config_file),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "hub: would merge 'c.petit' into 'carol'" in out
    assert "hub: would rename 'a.martin' into 'alice'" in out
    assert "audit: would record identity.alias_migrated for 'c.petit'" in out
    assert "ghost" in out  # not in the directory: left as it is
    assert main(["migrate", "identities", "--config", str(settings.config_file),
                 "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] and data["aliases"]["a.martin"]["name"] == "alice"
    assert data["airlock"]["requests"] == 1 and data["airlock"]["reviews"] == 2
    assert _hub_users(settings) == hub
    assert len(AuditLog.from_settings(settings).records()) == count
    engine = db.make_engine(f"sqlite:///{settings.state_dir / 'airlock' / 'airlock.sqlite'}")
    assert db.current_revision(engine) == "0002_previews_purge"
    engine.dispose()
    assert (settings.projects_root / "cardio-los" / "home" / "a.martin").is_dir()


def test_migration_maps_every_name_to_its_person(old_deployment, slapd):
    settings = old_deployment
    report = IdentityMigration(settings).run()
    assert report.aliases["c.petit"]["name"] == "carol"
    assert report.aliases["a.martin"]["uid_number"] == 20001
    # hub: c.petit merged into carol (its non-clashing server moved, its token revoked),
    # a.martin renamed alice (with her group), the unknown account untouched
    users = _hub_users(settings)
    assert set(users) == {"carol", "alice", "ghost"}
    assert users["carol"] == {"servers": ["", "cardio-los"], "tokens": 0, "groups": []}
    assert users["alice"]["groups"] == ["cardio-los"]
    # airlock: canonical names, DN/uidNumber recorded; one person's second review stays
    # under its old name, counts once, and the request it approved goes back to review
    rows = _airlock_rows(settings)
    alice_dn = normalize_dn(slapd.user_dn("alice"))
    assert rows["requests"] == [("ar-1", "alice", alice_dn, 20001, "in_review"),
                                ("ar-2", "alice", alice_dn, 20001, "in_review")]
    assert rows["reviews"] == [("ar-1", "carol", 20003), ("ar-1", "c.petit", 20003),
                               ("ar-2", "carol", 20003)]
    assert rows["actors"] == ["carol", "ecluse-migrate"] and rows["uploaders"] == ["alice"]
    assert report.airlock["reopened"] == ["ar-1"]
    # homes follow the name
    home = settings.projects_root / "cardio-los" / "home"
    assert (home / "alice" / "notes.txt").read_text() == "mine"
    assert not (home / "a.martin").exists()
    # audit: never rewritten; the mapping recorded, queries by person see every name
    audit = AuditLog.from_settings(settings)
    assert audit.verify().ok
    mapped = {r.details["alias"]: r.details for r in audit.records(
        event="identity.alias_migrated")}
    assert mapped["c.petit"]["canonical"] == "carol" and mapped["c.petit"]["hub"] == "merge"
    assert mapped["c.petit"]["audit_records"] == 2
    logins = [r.actor for r in audit.records(user="carol", event="login.success")]
    assert logins == ["c.petit", "carol", "c.petit"]
    assert [r.actor for r in audit.records(user="c.petit", event="login.success")] == logins
    assert [r.actor for r in audit.records(user="carol", event="login.success",
                                           aliases=False)] == ["carol"]
    # again: nothing to do, nothing recorded
    count = len(audit.records())
    again = IdentityMigration(settings).run()
    assert not again.changed and "nothing to migrate" in again.lines()
    assert len(audit.records()) == count


def test_release_after_migration_needs_two_people(old_deployment):
    """The migrated request once approved by one person twice cannot be released,
    and that person may not approve it again under either name."""
    from ecluse.airlock.errors import InvalidTransition, PolicyViolation
    from ecluse.airlock.service import AirlockService

    settings = old_deployment
    IdentityMigration(settings).run()
    service = AirlockService.from_settings(settings)
    try:
        staff = service.identity("erin", ["staff"])
        with pytest.raises(InvalidTransition):
            service.release(staff, "ar-1")
        for name in ("carol", "c.petit"):
            with pytest.raises(PolicyViolation, match="already reviewed"):
                service.review(service.identity(name, ["output-checkers"]), "ar-1",
                               decision="approve")
    finally:
        service.close()


def test_directory_down_migrates_nothing(old_deployment, slapd, tmp_path):
    settings = old_deployment
    down = load_settings(write_config(tmp_path / "down", slapd,
                                      overrides={"ldap.uri": "ldap://127.0.0.1:9"}))
    hub = _hub_users(settings)
    with pytest.raises(MigrationError, match="does not answer.*nothing was migrated"):
        IdentityMigration(settings, people=People(down)).run()
    assert _hub_users(settings) == hub
    engine = db.make_engine(f"sqlite:///{settings.state_dir / 'airlock' / 'airlock.sqlite'}")
    with engine.connect() as conn:  # not even the schema changed
        assert db.current_revision(engine) == "0002_previews_purge"
        assert conn.execute(text("SELECT requester FROM airlock_requests WHERE id = 'ar-1'")
                            ).scalar() == "a.martin"
    engine.dispose()
    failed = AuditLog.from_settings(settings).records(event="identity.migration")
    assert [r.outcome for r in failed] == ["failure"]


def test_running_alias_server_stops_the_migration(settings, aliases):
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _old_hub(settings, running=True)
    with pytest.raises(MigrationError, match=r"c.petit \(server 'air-quality'\).*stop them"):
        IdentityMigration(settings).run()
    assert "c.petit" in _hub_users(settings)


def test_up_migrates_once_per_state_directory(old_deployment):
    from ecluse.identities import run_once

    settings = old_deployment
    report = run_once(settings)
    assert report is not None and report.changed and "carol" in report.aliases["c.petit"]["name"]
    marker = settings.state_dir / "identity-migration.json"
    assert '"c.petit"' in marker.read_text()
    assert run_once(settings) is None
