"""Airlock fixtures: real databases, real checks, a real hub.

Components (each started for real and removed afterwards, pass or fail):

* ``pg_server`` (session) — Debian PostgreSQL on a free loopback port
  (:mod:`pgserver`), only when ``ECLUSE_TEST_POSTGRES=1`` or ``--postgres``;
  installed with apt-get when its binaries are missing.
* ``db_url`` — parametrised ``sqlite`` / ``postgres``: a fresh database per
  test (SQLite file in ``tmp_path``, or ``CREATE DATABASE`` on ``pg_server``).
* ``service`` — an :class:`AirlockService` on ``db_url`` (migrated to head),
  a staging area and a hash-chained :class:`AuditLog` in ``tmp_path``, the
  real ``ecluse.sdc`` checker and two projects (``cardio-los``, and
  ``air-quality`` whose members may review).
* ``users`` — identities: alice, bob (cardio-los researchers), carol, dan
  (output checkers), erin (checker and cardio-los member), sam (staff), eve
  (no groups), fay (air-quality researcher).
* ``files`` — generated outputs whose verdict is obvious: ``block`` (patient
  ids), ``fail`` (a cell of 3), ``pass`` (counts ≥ 13), ``review`` (PNG).
* ``create_request_at_status`` — factory taking a request to any state.
* ``airlock_hub`` (session) — JupyterHub + proxy + the hub-managed airlock
  service (:mod:`hubstack`), users signing in through
  :class:`tests.support.doubles.GroupsFromConfigAuthenticator`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecluse.airlock import db
from ecluse.airlock.rules import State
from ecluse.airlock.service import AirlockService
from ecluse.airlock.storage import Staging
from ecluse.audit import AuditLog
from ecluse.config import Project
from ecluse.sdc import DisclosurePolicy
from ecluse.settings.airlock import AirlockSettings

from .hubstack import AirlockHub
from .pgserver import PostgresServer


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--postgres`` (seen when pytest is started on tests/airlock; otherwise use the
    ECLUSE_TEST_POSTGRES=1 switch, which .ci/run sets)."""
    try:
        parser.addoption("--postgres", action="store_true", default=False,
                         help="also run the airlock database suites on PostgreSQL")
    except ValueError:  # already registered by a parent conftest
        pass


def postgres_enabled(config: pytest.Config) -> bool:
    try:
        if config.getoption("--postgres"):
            return True
    except ValueError:
        pass
    return os.environ.get("ECLUSE_TEST_POSTGRES", "") not in ("", "0")


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    if not postgres_enabled(request.config):
        pytest.skip("PostgreSQL tests are off (set ECLUSE_TEST_POSTGRES=1 or --postgres)")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'airlock.sqlite'}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


PROJECTS = {
    "cardio-los": Project(slug="cardio-los", title="Cardiac LOS", ldap_group="proj-cardio-los"),
    "air-quality": Project(
        slug="air-quality", title="Air quality", ldap_group="proj-air-quality",
        members_may_review=True,
    ),
}

GROUPS = {
    "alice": ["cardio-los"],
    "bob": ["cardio-los"],
    "carol": ["output-checkers"],
    "dan": ["output-checkers"],
    "erin": ["output-checkers", "cardio-los"],
    "sam": ["staff"],
    "eve": [],
    "fay": ["air-quality", "output-checkers"],
    "gus": ["air-quality"],
}


@pytest.fixture
def make_service(tmp_path: Path, db_url: str) -> Iterator[Callable[..., AirlockService]]:
    engines = []
    services: list[AirlockService] = []

    def make(*, checker: Any = None, background_checks: int = 0,
             **settings: Any) -> AirlockService:
        engine = db.make_engine(db_url)
        read_engine = db.make_engine(db_url, readonly=True) if db_url.startswith("sqlite") else None
        engines.extend([engine, read_engine] if read_engine else [engine])
        db.upgrade(engine)
        staging = Staging(tmp_path / "staging")
        staging.prepare()
        audit = AuditLog(f"sqlite:///{tmp_path / 'audit.sqlite'}", tmp_path / "audit.jsonl")
        engines.append(audit.engine)
        made = AirlockService(
            engine=engine, staging=staging, projects=PROJECTS,
            policy_for=lambda slug: DisclosurePolicy(), audit=audit,
            settings=AirlockSettings(**settings), read_engine=read_engine,
            background_checks=background_checks,
            **({"checker": checker} if checker is not None else {}),
        )
        services.append(made)
        return made

    yield make
    for made in services:
        if made.checks is not None:
            made.checks.shutdown()
    for e in engines:
        e.dispose()


@pytest.fixture
def service(make_service: Callable[..., AirlockService]) -> AirlockService:
    return make_service()


class Users:
    def __init__(self, service: AirlockService) -> None:
        self._service = service

    def __getattr__(self, name: str):
        if name not in GROUPS:
            raise AttributeError(name)
        return self._service.identity(name, GROUPS[name])


@pytest.fixture
def users(service: AirlockService) -> Users:
    return Users(service)


# ---------------------------------------------------------------- files


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


class Files:
    """Outputs whose verdict is obvious; each attribute is (name, bytes)."""

    block = ("patients.csv", b"patient_id,age,los_days\n" + b"".join(
        f"P{100000 + i},{20 + i % 70},{1 + i % 29}\n".encode() for i in range(40)))
    fail = ("counts_small.csv", b"sex,age_band,n\nF,18-40,25\nF,41-65,3\nM,18-40,31\nM,41-65,40\n")
    ok = ("counts_safe.csv", b"sex,age_band,n\nF,18-40,25\nF,41-65,13\nM,18-40,31\nM,41-65,40\n")
    review = ("plot.png", png_bytes())


#: the context and controls the fixtures give every fail/review file they submit
CONTEXT = "Length of stay by sex and age band, adult cardiac admissions 2019-2023"
CONTROLS = "Counts under 10 checked by hand; no rounding"


def describe_all(service: AirlockService, user: Any, rid: str) -> None:
    """Give every file that needs them (``fail``/``review``) context and controls."""
    for f in service.get_request(user, rid, record_view=False)["files"]:
        if f["needs_context"]:
            service.describe_file(user, rid, f["id"], context=CONTEXT, controls=CONTROLS)


@pytest.fixture
def files() -> type[Files]:
    return Files


@pytest.fixture
def create_request_at_status(
    service: AirlockService, users: Users
) -> Callable[..., dict[str, Any]]:
    """Make a cardio-los request by alice and take it to ``state``.

    ``files``: list of (name, bytes) (default: one passing table). Approvals
    are given by carol then dan, with written reasons for the files that need
    one (``fail``, ``review``).
    """

    def make(state: State | str, files: list[tuple[str, bytes]] | None = None,
             requester: str = "alice", project: str = "cardio-los") -> dict[str, Any]:
        state = State(state)
        author = getattr(users, requester)
        req = service.create_request(author, project=project, title="Length of stay tables",
                                     justification="Tables for the paper")
        for name, data in files or [Files.ok]:
            service.add_file(author, req["id"], name, [data])
        rid = req["id"]
        describe_all(service, author, rid)  # needed to submit (issue 21 item 3)
        if state is State.DRAFT:
            return service.get_request(author, rid, record_view=False)
        if state is State.WITHDRAWN:
            return service.withdraw(author, rid)
        service.submit(author, rid)
        overrides = {f["name"]: "Cell is a known published figure"
                     for f in service.get_request(author, rid, record_view=False)["files"]
                     if f["needs_override_reason"]}
        if state is State.SUBMITTED:
            return service.get_request(author, rid, record_view=False)
        if state is State.CHANGES_REQUESTED:
            return service.review(users.carol, rid, decision="request_changes",
                                  comment="Please round the counts")
        if state is State.REJECTED:
            return service.review(users.carol, rid, decision="reject", comment="Row-level")
        service.review(users.carol, rid, decision="approve", overrides=overrides)
        if state is State.IN_REVIEW:
            return service.get_request(author, rid, record_view=False)
        out = service.review(users.dan, rid, decision="approve", overrides=overrides)
        if state is State.APPROVED:
            return out
        return service.release(users.carol, rid)

    return make


@pytest.fixture(scope="session")
def airlock_hub() -> Iterator[AirlockHub]:
    hub = AirlockHub()
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()
