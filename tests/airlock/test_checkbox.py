"""Disclosure checks and previews run in a one-shot sandbox (issue 14, item 4).

Real sandboxes (``ecluse.sandbox.local``: bubblewrap, a network namespace,
cgroups), so these tests need root, like ``tests/sandbox`` (CI runs as root);
without it they fail with a clear message. Every sandbox launched here is
tracked and checked gone afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ecluse.airlock.checkbox import (
    CHECK_DIR,
    CHECK_PROJECT_PREFIX,
    RESULT_MARK,
    SandboxChecker,
)
from ecluse.airlock.checkjob import LEDGER_DIR
from ecluse.airlock.rules import State
from ecluse.config import Dataset, LDAPSettings, Project, SandboxSettings, Settings
from ecluse.sandbox.cgroups import (
    CHECKS_PARENT,
    V1_SHARES_PER_CPU,
    V2_WEIGHT_PER_CPU,
    Cgroups,
    list_ids,
)
from ecluse.sandbox.local import check_sandboxes
from ecluse.sdc import DisclosurePolicy
from ecluse.settings.airlock import AirlockSettings, airlock_settings
from tests.airlock.conftest import Files, describe_all
from tests.airlock.test_ledger import ADULTS, OLDER, OLDER_SAFE
from tests.airlock.test_service_context import CONTRIBUTORS, MAGNITUDE
from tests.support.sandboxes import LAUNCHED, TrackingLocalSandbox

pytestmark = pytest.mark.timeout(240)

@pytest.fixture
def deployment(tmp_path: Path) -> Settings:
    if os.geteuid() != 0:
        pytest.fail("the check sandbox tests need root (bubblewrap, network namespaces, "
                    "cgroups), like tests/sandbox; CI runs as root", pytrace=False)
    os.chmod(tmp_path, 0o755)
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True, mode=0o700)
    os.chmod(state, 0o755)  # even a traversable state directory must not be reachable
    secret = state / "secrets" / "cookie_secret"
    secret.write_text("TOP-SECRET-cookie-0123456789")
    secret.chmod(0o644)  # even a world-readable secret file
    (state / "airlock.sqlite").write_text("SQLite format 3 (the airlock database)")
    ldap = LDAPSettings(uri="ldap://127.0.0.1:3890", base_dn="dc=test", bind_dn="cn=svc,dc=test",
                        user_search_base="ou=people,dc=test", group_search_base="ou=groups,dc=test")
    return Settings(state_dir=state, ldap=ldap,
                    sandbox=SandboxSettings(stop_grace=1.0, subnet="10.213.0.0/16"))


@pytest.fixture
def checker(deployment: Settings, tmp_path: Path):
    conf = AirlockSettings(check_timeout=60, check_memory="512M")
    backend = TrackingLocalSandbox(settings=deployment)
    start = len(LAUNCHED)
    tmp = tmp_path / "staging" / "tmp"
    tmp.mkdir(parents=True, mode=0o700)
    yield SandboxChecker(deployment, conf, backend=backend), tmp
    projects = Path(deployment.state_dir) / "projects"
    left = [p.name for p in projects.iterdir()] if projects.exists() else []
    assert not [n for n in left if n.startswith(CHECK_PROJECT_PREFIX)], left
    assert list(tmp.iterdir()) == []
    for launched in LAUNCHED[start:]:
        sid = launched["id"]
        assert not Cgroups(sid).exists(), sid
        assert not Path(f"/run/ecluse/sandboxes/{sid}").exists(), sid
        assert not Path(f"/run/netns/ecluse-{sid}").exists(), sid


def _object(tmp_path: Path, data: bytes) -> Path:
    obj = tmp_path / "staging" / "objects" / "ab" / "object"
    obj.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp_path / "staging", 0o700)
    obj.write_bytes(data)
    obj.chmod(0o400)
    return obj


def test_checks_and_previews_run_in_an_unprivileged_sandbox(checker, tmp_path):
    chk, tmp = checker
    for name, data, verdict in ((*Files.block, "block"), (*Files.fail, "fail"),
                                (*Files.ok, "pass"), (*Files.review, "review")):
        obj = _object(tmp_path, data)
        out = chk(obj, name, DisclosurePolicy(), tmp, 200)
        assert out["report"]["verdict"] == verdict, (name, out["report"])
        spec = LAUNCHED[-1]["spec"]
        assert spec.user.uid == 64900 and spec.user.gid == 64900
        assert spec.allowed_ports == [] and spec.project.datasets == []
        assert spec.project.slug.startswith(CHECK_PROJECT_PREFIX)
        assert [(m.target, m.read_only) for m in spec.extra_mounts] == [(CHECK_DIR, True)]
        if verdict == "fail":
            assert ["F", "41-65", "3"] in out["preview"]["rows"]
            # the fixed version proposed is made here too, from the sandbox's copy
            assert "F,41-65,c" in out["proposal"]["text"]
            assert out["proposal"]["verdict"] == "pass"
        else:
            assert "proposal" not in out
        if verdict == "block":
            assert len(out["preview"]["rows"]) <= 20 and out["preview"]["masked_columns"]
            assert "P100000" not in json.dumps(out)


PROBE = r"""
import json, os, socket, sys
out = {"uid": os.getuid(), "gid": os.getgid()}
def attempt(key, fn):
    try:
        out[key] = ["read", str(fn())[:80]]
    except Exception as e:
        out[key] = ["refused", type(e).__name__]
attempt("secret", lambda: open(SECRET).read())
attempt("state_dir", lambda: os.listdir(STATE))
attempt("database", lambda: open(STATE + "/airlock.sqlite").read())
attempt("staged_object", lambda: open(OBJECT, "rb").read())
attempt("input_copy", lambda: open("/airlock-check/in/" + NAME).read())
attempt("write_input", lambda: open("/airlock-check/in/" + NAME, "a").write("x"))
attempt("data", lambda: os.listdir("/data"))
def net():
    s = socket.create_connection(("127.0.0.1", 22), timeout=2)
    return s
attempt("loopback_net", net)
def net2():
    s = socket.socket(); s.settimeout(2); s.connect(("1.1.1.1", 443)); return s
attempt("outside_net", net2)
print(MARK + json.dumps(out), flush=True)
"""


class SecretsProbe(SandboxChecker):
    """The check sandbox path, running a probe where the reader would run: what an
    exploited parser could reach."""

    probe = ""

    def job_command(self, job_path: str) -> list[str]:
        return [sys.executable, "-I", "-c", self.probe]


def _probe_code(settings: Settings, obj: Path, name: str) -> str:
    consts = (f"SECRET = {str(settings.state_dir / 'secrets' / 'cookie_secret')!r}\n"
              f"STATE = {str(settings.state_dir)!r}\nOBJECT = {str(obj)!r}\n"
              f"NAME = {name!r}\nMARK = {RESULT_MARK!r}\n")
    return consts + textwrap.dedent(PROBE)


def _payload(stdout: str) -> dict:
    line = next(x for x in stdout.splitlines() if x.startswith(RESULT_MARK))
    return json.loads(line[len(RESULT_MARK):])


def test_a_checking_process_cannot_read_the_state_directory_secrets(deployment, checker,
                                                                    tmp_path):
    chk, tmp = checker
    name, data = Files.block
    obj = _object(tmp_path, data)
    code = _probe_code(deployment, obj, name)
    # control: the same probe where checks used to run (the service's own processes)
    # reads everything, so the refusals below are the sandbox's doing
    staged = tmp_path / "control" / "in"
    staged.mkdir(parents=True)
    (staged / name).write_bytes(data)
    control = subprocess.run([sys.executable, "-I", "-c", code.replace("/airlock-check/in/",
                                                                        f"{staged}/")],
                             capture_output=True, text=True, timeout=60)
    seen = _payload(control.stdout)
    assert seen["secret"][0] == "read" and "TOP-SECRET" in seen["secret"][1]
    assert seen["staged_object"][0] == "read" and seen["database"][0] == "read"

    probe = SecretsProbe(deployment, chk.conf, backend=chk.backend)
    probe.probe = code
    result = asyncio.run(probe.run(obj, name, DisclosurePolicy(), tmp))
    assert result.exit_code == 0, result.stderr
    got = _payload(result.stdout)
    assert got["uid"] == 64900 and got["gid"] == 64900
    assert got["input_copy"][0] == "read" and "patient_id" in got["input_copy"][1]
    for key in ("secret", "state_dir", "database", "staged_object", "write_input",
                "loopback_net", "outside_net"):
        assert got[key][0] == "refused", (key, got[key])
    assert got["data"] == ["read", "[]"]
    assert "TOP-SECRET" not in result.stdout + result.stderr


class NappingJob(SandboxChecker):
    """A reader that takes a few seconds (long enough to be seen from the host)."""

    def job_command(self, job_path: str) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(4)"]


def _deployed_job(cls: type[SandboxChecker], deployment: Settings,
                  tmp_path: Path) -> tuple[SandboxChecker, Path, Path]:
    """``cls`` on the check sandboxes as the launcher makes them (``check_sandboxes``),
    its temporary folder, and a staged ``pass`` file."""
    tmp = tmp_path / "staging" / "tmp"
    tmp.mkdir(parents=True, mode=0o700)
    job = cls(deployment, AirlockSettings(check_timeout=120, check_memory="512M"),
              backend=check_sandboxes(deployment))
    return job, tmp, _object(tmp_path, Files.ok[1])


def test_checks_run_in_a_low_weight_cgroup_of_their_own(deployment, tmp_path):
    """The checks yield the CPU to the API on a busy host (issue 21 item 1): the
    sandboxes the launcher starts for the airlock share the ``ecluse-checks`` cgroup,
    which weighs ``check_cpu_weight`` busy processes, not the workspaces' parent."""
    weight = airlock_settings(deployment).check_cpu_weight
    job, tmp, obj = _deployed_job(NappingJob, deployment, tmp_path)
    name = Files.ok[0]
    workspaces_before = list_ids("ecluse")
    seen: list[tuple[str, int, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and not seen:
            for sid in list_ids(CHECKS_PARENT):
                cg = Cgroups(sid, parent=CHECKS_PARENT)
                if cg.pids():
                    cpu = next(d for d in cg.dirs if "cpu" in d.parts) if cg.version == 1 \
                        else cg.dirs[0]
                    share = "cpu.shares" if cg.version == 1 else "cpu.weight"
                    seen.append((sid, int((cpu.parent / share).read_text()),
                                 int((cpu / share).read_text())))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = asyncio.run(job.run(obj, name, DisclosurePolicy(), tmp))
    finally:
        done.set()
        watcher.join()
    assert result.exit_code == 0, result.stderr
    assert seen, "no check sandbox was seen in the ecluse-checks cgroup"
    sid, parent_weight, own = seen[0]
    per_cpu = V1_SHARES_PER_CPU if Cgroups(sid, parent=CHECKS_PARENT).version == 1 \
        else V2_WEIGHT_PER_CPU
    assert parent_weight == int(per_cpu * weight) < per_cpu  # less than one busy process
    assert own == int(per_cpu * 1.0)  # each check in proportion to its check_cpu
    assert sid not in list_ids("ecluse") and list_ids("ecluse") == workspaces_before
    assert not Cgroups(sid, parent=CHECKS_PARENT).exists()  # removed with the sandbox
    for parent in {d.parent for d in Cgroups(sid, parent=CHECKS_PARENT).dirs}:
        with contextlib.suppress(OSError):  # the parent, once no other check uses it
            parent.rmdir()


class SleepingJob(SandboxChecker):
    """A reader stuck in a loop (a decompression bomb, a pathological regex)."""

    def job_command(self, job_path: str) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_stopping_airlock_stops_its_running_checks_and_leaves_nothing(deployment, tmp_path):
    """A root airlock starts its check sandboxes itself: when it stops (``close``), the
    checks running then are stopped and released, not left registered with their
    network namespace and cgroups; the file is not ``pass`` (re-checked at the next
    start, :mod:`ecluse.airlock.background`)."""
    job, tmp, obj = _deployed_job(SleepingJob, deployment, tmp_path)
    backend, name = job.backend, Files.ok[0]
    out: dict = {}
    worker = threading.Thread(
        target=lambda: out.update(result=job(obj, name, DisclosurePolicy(), tmp)))
    worker.start()
    deadline = time.monotonic() + 60
    while not (backend._children and all(Cgroups(s, parent=CHECKS_PARENT).pids()
                                         for s in backend._children)):
        assert time.monotonic() < deadline, "the check sandbox did not start"
        time.sleep(0.05)
    [sid] = list(backend._children)
    stopping = time.monotonic()
    job.shutdown()
    worker.join(60)
    assert not worker.is_alive() and time.monotonic() - stopping < 30
    assert out["result"]["report"]["verdict"] == "review"  # never pass
    assert not Path(f"/run/ecluse/sandboxes/{sid}").exists()
    assert not Path(f"/run/netns/ecluse-{sid}").exists()
    assert not Cgroups(sid, parent=CHECKS_PARENT).exists()
    assert list(tmp.iterdir()) == []
    for parent in {d.parent for d in Cgroups(sid, parent=CHECKS_PARENT).dirs}:
        with contextlib.suppress(OSError):
            parent.rmdir()


class CrashingJob(SandboxChecker):
    """A reader that dies (a segfault in a C extension)."""

    def job_command(self, job_path: str) -> list[str]:
        return [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]


class LyingJob(SandboxChecker):
    """An exploited reader printing a forged ``pass`` after garbage."""

    def job_command(self, job_path: str) -> list[str]:
        return [sys.executable, "-c", f"print({RESULT_MARK!r} + '{{not json'); exit(0)"]


@pytest.mark.parametrize("job,expected", [
    (SleepingJob, "timed out after 2s"), (CrashingJob, "automatic check failed (exit status"),
    (LyingJob, "automatic check failed (exit status 0)"),
])
def test_a_check_sandbox_that_fails_sends_the_file_to_review(deployment, checker, tmp_path,
                                                             job, expected):
    chk, tmp = checker
    bad = job(deployment, chk.conf.model_copy(update={"check_timeout": 2}), backend=chk.backend)
    out = bad(_object(tmp_path, Files.ok[1]), Files.ok[0], DisclosurePolicy(), tmp, 200)
    assert out["report"]["verdict"] == "review"
    assert expected in out["report"]["findings"][0]["message"]
    assert out["preview"]["kind"] == "none"


LEDGER_PROBE = r"""
import json, os
out = {}
def attempt(key, fn):
    try:
        out[key] = ["done", str(fn())[:80]]
    except Exception as e:
        out[key] = ["refused", type(e).__name__]
job = json.load(open("/airlock-check/job.json"))
rows = json.load(open("/airlock-ledger/ledger.json"))
out["released_in"] = sorted({r["origin"]["request"] for r in rows})
out["ledger_dir"] = sorted(os.listdir("/airlock-ledger"))
attempt("write_ledger", lambda: open("/airlock-ledger/ledger.json", "a").write("[]"))
attempt("new_file", lambda: open("/airlock-ledger/more.json", "w").write("[]"))
attempt("chmod", lambda: os.chmod("/airlock-ledger/ledger.json", 0o666))
attempt("write_job", lambda: open("/airlock-check/job.json", "a").write("{}"))
out["differencing"] = [[] for _ in job["files"]]
print(MARK + json.dumps(out), flush=True)
"""


class LedgerProbe(SandboxChecker):
    """The differencing sandbox running a probe where the job would run: what an
    exploited job could do with the ledger it is given."""

    def job_command(self, job_path: str) -> list[str]:
        return [sys.executable, "-I", "-c", f"MARK = {RESULT_MARK!r}\n" + LEDGER_PROBE]

    def _payload(self, result, display_name):
        payload = super()._payload(result, display_name)
        self.seen.append(payload)
        return payload


def test_differencing_runs_in_a_sandbox_that_reads_its_scopes_ledger_only(
        checker, deployment, service, users, create_request_at_status, tmp_path):
    chk, tmp = checker
    assert service.staging.tmp == tmp
    service.projects = {
        "cardio-los": Project(slug="cardio-los", title="Cardiac LOS",
                              ldap_group="proj-cardio-los",
                              datasets=[Dataset(name="pmsi", path=tmp_path / "pmsi-2024")]),
        "air-quality": Project(slug="air-quality", title="Air quality",
                               ldap_group="proj-air-quality", members_may_review=True,
                               datasets=[Dataset(name="pmsi", path=tmp_path / "pmsi-2023")]),
    }
    mine = create_request_at_status(State.RELEASED, files=[ADULTS])
    theirs = create_request_at_status(State.RELEASED, files=[ADULTS], requester="gus",
                                      project="air-quality")
    # the real differencing job, in its sandbox: the earlier release is cited
    service.differ = chk.difference
    req = service.create_request(users.bob, project="cardio-los", title="Older",
                                 justification="paper")
    service.add_file(users.bob, req["id"], OLDER[0], [OLDER[1]])
    [older] = service.get_request(users.bob, req["id"], record_view=False)["files"]
    assert older["verdict"] == "fail"
    [found] = [x for x in older["findings"] if x["rule"] == "differencing"]
    assert found["location"]["released_in"] == mine["id"]
    spec = LAUNCHED[-1]["spec"]
    assert [(m.target, m.read_only) for m in spec.extra_mounts] == [
        (CHECK_DIR, True), (LEDGER_DIR, True)]
    assert spec.user.uid == 64900 and spec.allowed_ports == []
    # what the sandbox sees: its scope's releases only, and none of it writable
    probe = LedgerProbe(deployment, chk.conf, backend=chk.backend)
    probe.seen = []
    service.differ = probe.difference
    describe_all(service, users.bob, req["id"])
    service.submit(users.bob, req["id"])
    [got] = probe.seen
    assert got["released_in"] == [mine["id"]] and theirs["id"] not in json.dumps(got)
    assert got["ledger_dir"] == ["ledger.json"]
    for key in ("write_ledger", "new_file", "chmod", "write_job"):
        assert got[key][0] == "refused", (key, got[key])


def test_differencing_that_cannot_run_in_its_sandbox_sends_the_files_to_review(
        checker, deployment, service, users):
    chk, _tmp = checker
    service.differ = CrashingJob(deployment, chk.conf, backend=chk.backend).difference
    req = service.create_request(users.bob, project="cardio-los", title="Older",
                                 justification="paper")
    started = len(LAUNCHED)
    service.add_file(users.bob, req["id"], OLDER_SAFE[0], [OLDER_SAFE[1]])
    # one table and no earlier release: nothing to compare, no sandbox
    assert len(LAUNCHED) == started
    assert service.get_request(users.bob, req["id"], record_view=False)["files"][0][
        "verdict"] == "pass"
    service.add_file(users.bob, req["id"], ADULTS[0], [ADULTS[1]])
    assert len(LAUNCHED) == started + 1
    for f in service.get_request(users.bob, req["id"], record_view=False)["files"]:
        assert f["verdict"] == "review", f
        assert "differencing against the other files and earlier releases failed" in \
            f["findings"][-1]["message"]


def test_dominance_through_a_supporting_file_is_found_by_the_check_sandboxes(
        checker, service, users):
    """Each file checked in its own sandbox keeps what the match needs; the set judgement,
    in a sandbox of its own, finds the dominant contributor of the magnitude table."""
    chk, _tmp = checker
    service.checker = chk
    service.differ = chk.difference
    req = service.create_request(users.alice, project="cardio-los", title="Turnover",
                                 justification="paper")
    started = len(LAUNCHED)
    table = service.add_file(users.alice, req["id"], MAGNITUDE[0], [MAGNITUDE[1]])
    assert table["verdict"] == "pass"
    assert len(LAUNCHED) == started + 1  # its check; nothing to match yet, no set sandbox
    service.add_file(users.alice, req["id"], CONTRIBUTORS[0], [CONTRIBUTORS[1]],
                     supporting=True)
    assert len(LAUNCHED) == started + 3  # the contributors' check, then the set judgement
    assert LAUNCHED[-1]["spec"].extra_mounts[-1].target == LEDGER_DIR
    files = {f["name"]: f for f in service.get_request(users.alice, req["id"],
                                                        record_view=False)["files"]}
    got = files[MAGNITUDE[0]]
    assert got["verdict"] == "fail"
    [found] = [x for x in got["findings"] if x["rule"] == "dominance-nk"]
    assert found["location"]["supporting_file"] == CONTRIBUTORS[0]
    assert found["location"]["row"] == 2
