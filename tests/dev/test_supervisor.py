"""Restart and leftovers, piece by piece, with real processes: the supervisor of
``ecluse up`` (:mod:`ecluse.dev.supervisor`), the services' mark
(:mod:`ecluse.hubservice.instances`) and the sweeps of temporary files at start
(airlock staging, batch run folders). The whole stack is killed and restarted in
``tests/stack/test_supervise.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecluse.airlock.storage import Staging, StagingWriter
from ecluse.audit import AuditLog
from ecluse.batch.records import RecordStore
from ecluse.dev.supervisor import (
    RESTARTED,
    Supervised,
    Supervisor,
    SupervisorGaveUp,
)
from ecluse.hubservice import instances

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


def alive(pid: int) -> bool:
    return instances._alive(pid)


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    return AuditLog(f"sqlite:///{tmp_path}/audit.sqlite")


class SleeperComponent:
    """A component that is a real process; ``fail_starts`` starts fail first."""

    def __init__(self, procs: list[subprocess.Popen], fail_starts: int = 0) -> None:
        self.procs = procs
        self.proc: subprocess.Popen | None = None
        self.fail_starts = fail_starts
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("port already in use")
        self.proc = subprocess.Popen(SLEEPER)
        self.procs.append(self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def supervised(self, name: str = "sleeper") -> Supervised:
        return Supervised(name, start=self.start, stop=self.stop,
                          exit_status=lambda: self.proc.poll() if self.proc else -1)


def test_a_dead_component_is_restarted_and_audited(procs, audit) -> None:
    one, two = SleeperComponent(procs), SleeperComponent(procs)
    one.start()
    two.start()
    sup = Supervisor([one.supervised("one"), two.supervised("two")], audit=audit)
    sup.poll()
    assert sup.restarts == []
    first = one.proc.pid
    os.kill(first, signal.SIGKILL)
    one.proc.wait(5)
    sup.poll()
    assert one.proc.pid != first and one.proc.poll() is None
    assert two.starts == 1  # the others are not touched
    assert [(n, s) for n, s, _ in sup.restarts] == [("one", -signal.SIGKILL)]
    (rec,) = [r for r in audit.records() if r.event == RESTARTED]
    assert rec.details["component"] == "one" and rec.details["exit_status"] == -9
    assert rec.outcome == "success" and rec.details["seconds_down"] >= 0
    sup.stop()
    assert one.proc.poll() is not None and two.proc.poll() is not None


def test_failed_restarts_back_off_then_give_up(procs, audit) -> None:
    now = [100.0]
    comp = SleeperComponent(procs)
    comp.start()
    sup = Supervisor([comp.supervised()], audit=audit, backoff=1.0, max_failures=4,
                     clock=lambda: now[0])
    comp.fail_starts = 10
    comp.proc.kill()
    comp.proc.wait(5)
    sup.poll()
    assert comp.starts == 2  # first attempt at once
    sup.poll()
    assert comp.starts == 2  # ... the next one after 1 s
    now[0] += 1.0
    sup.poll()
    assert comp.starts == 3
    now[0] += 1.5
    sup.poll()
    assert comp.starts == 3  # 2 s this time
    now[0] += 0.5
    sup.poll()
    assert comp.starts == 4
    now[0] += 3.9
    sup.poll()
    assert comp.starts == 4  # then 4 s
    now[0] += 0.1
    with pytest.raises(SupervisorGaveUp, match="sleeper exited with status -9 and could not "
                                               "be started again after 4 attempts"):
        sup.poll()
    (rec,) = [r for r in audit.records() if r.event == RESTARTED]
    assert rec.outcome == "failure" and rec.details["attempts"] == 4


def test_a_component_that_starts_again_after_failures_is_restarted(procs, audit) -> None:
    now = [0.0]
    comp = SleeperComponent(procs)
    comp.start()
    sup = Supervisor([comp.supervised()], audit=audit, clock=lambda: now[0])
    comp.fail_starts = 1
    comp.proc.kill()
    comp.proc.wait(5)
    sup.poll()
    now[0] += 1.0
    sup.poll()
    assert comp.proc.poll() is None and comp.starts == 3
    (rec,) = [r for r in audit.records() if r.event == RESTARTED]
    assert rec.details["attempts"] == 2 and rec.details["seconds_down"] == 1.0


def test_die_with_parent(tmp_path: Path, procs) -> None:
    """A child started with die_with_parent() gets SIGTERM when its parent is killed."""
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
from ecluse.dev.supervisor import die_with_parent
p = subprocess.Popen({SLEEPER!r}, preexec_fn=die_with_parent(), start_new_session=True)
open({str(pidfile)!r}, "w").write(str(p.pid))
time.sleep(300)
"""])
    procs.append(parent)
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text(), 20)
    child = int(pidfile.read_text())
    try:
        assert alive(child)
        parent.kill()
        assert wait_for(lambda: not alive(child)), "the child outlived its killed parent"
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def _marked(procs: list[subprocess.Popen], state: Path, name: str) -> subprocess.Popen:
    env = dict(os.environ, **{instances.MARK: str(state.resolve()), instances.NAME_VAR: name})
    p = subprocess.Popen(SLEEPER, env=env, start_new_session=True)
    procs.append(p)
    return p


def test_previous_service_instances_are_found_by_their_mark(tmp_path: Path, procs) -> None:
    state, other = tmp_path / "state", tmp_path / "other"
    airlock = _marked(procs, state, "airlock")
    batch = _marked(procs, state, "batch")
    elsewhere = _marked(procs, other, "airlock")  # another deployment's
    plain = subprocess.Popen(SLEEPER)  # not a service
    procs.append(plain)
    assert wait_for(lambda: len(instances.find(state)) == 2)
    assert {i.service for i in instances.find(state)} == {"airlock", "batch"}
    assert [i.pid for i in instances.find(state, "batch")] == [batch.pid]

    stopped = instances.stop_previous(state, "airlock")
    assert len(stopped) == 1 and f"pid {airlock.pid}" in stopped[0]
    assert airlock.wait(5) == -signal.SIGTERM
    assert batch.poll() is None and elsewhere.poll() is None and plain.poll() is None
    instances.stop_previous(state)
    assert batch.wait(5) is not None
    assert elsewhere.poll() is None and plain.poll() is None
    assert instances.find(state) == []


def test_a_service_stops_its_previous_instance_not_itself(tmp_path: Path, procs,
                                                          audit) -> None:
    state = tmp_path / "state"
    old = _marked(procs, state, "airlock")
    other = _marked(procs, state, "batch")
    out = tmp_path / "out"
    new = subprocess.Popen([sys.executable, "-c", f"""
from ecluse.hubservice.instances import stop_my_previous
print(len(stop_my_previous()), file=open({str(out)!r}, "w"))
"""], env=dict(os.environ, **{instances.MARK: str(state.resolve()),
                              instances.NAME_VAR: "airlock"}))
    procs.append(new)
    assert new.wait(30) == 0
    assert out.read_text().strip() == "1"
    assert old.wait(5) is not None
    assert other.poll() is None


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path, procs) -> None:
    state = tmp_path / "state"
    env = dict(os.environ, **{instances.MARK: str(state.resolve()), instances.NAME_VAR: "x"})
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"],
        env=env, stdout=subprocess.PIPE)
    procs.append(stubborn)
    assert stubborn.stdout.readline() == b"ready\n"
    t0 = time.monotonic()
    instances.stop(instances.find(state), grace=0.5)
    assert stubborn.wait(5) == -signal.SIGKILL
    assert time.monotonic() - t0 < 5


def test_airlock_sweep_removes_partial_uploads_and_work_folders(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    staging.prepare()
    kept_sha, _ = staging.put_stream(iter([b"released bytes"]), max_bytes=1 << 20)
    partial = StagingWriter(staging, 1 << 20)
    partial.write(b"x" * 70_000)  # a killed upload: never committed nor aborted
    partial._fh.flush()
    work = staging.tmp / "check-abc"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "preview.html").write_bytes(b"y" * 1000)
    removed = staging.sweep()
    assert sorted(r["bytes"] for r in removed) == [1000, 70_000]
    assert list(staging.tmp.iterdir()) == []
    assert staging.exists(kept_sha)  # staged objects are not temporary
    partial._fh.close()
    assert staging.sweep() == []


def test_batch_sweep_removes_half_written_record_files(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records")
    run = store.run_dir("r1")
    run.mkdir()
    (run / "output.ipynb").write_bytes(b"{}")
    (run / ".output.ipynb.0a1b2c3d.tmp").write_bytes(b"half")
    removed = store.sweep()
    assert removed == [{"name": "r1/.output.ipynb.0a1b2c3d.tmp", "bytes": 4}]
    assert sorted(p.name for p in run.iterdir()) == ["output.ipynb"]


def test_a_hub_left_running_on_the_state_folder_is_stopped_before_a_new_one(
        settings, procs) -> None:
    """``ecluse up`` killed while its hub survived (or a hub that would not stop): the
    next start kills it (SIGKILL: its workspaces are re-adopted), and only a hub of
    this state folder, whatever the pid file says."""
    from ecluse.dev.stack import Stack
    from ecluse.hub.hubconfig import ENV_STATE_DIR

    stack = Stack(settings)
    stack.prepare()
    other = subprocess.Popen(SLEEPER, env=dict(os.environ, **{ENV_STATE_DIR: "/elsewhere"}))
    procs.append(other)
    stack.hub_pid_file.write_text(str(other.pid))
    assert stack.stop_stale_hub() is None and other.poll() is None
    hub = subprocess.Popen(SLEEPER, env=dict(os.environ,
                                             **{ENV_STATE_DIR: str(settings.state_dir)}))
    procs.append(hub)
    stack.hub_pid_file.write_text(str(hub.pid))
    assert wait_for(lambda: instances.environ(hub.pid).get(ENV_STATE_DIR))
    assert stack.stop_stale_hub() == hub.pid
    assert hub.wait(5) == -signal.SIGKILL
    (rec,) = AuditLog.from_settings(settings, writer=False).records(
        event=instances.LEFTOVERS_EVENT)
    assert rec.details["kind"] == "hub process" and rec.actor == "ecluse-up"


def test_a_killed_parent_leaves_the_keeper_to_stop_in_order(tmp_path: Path, procs) -> None:
    """``ecluse up`` killed with SIGKILL: its keeper (the child that owns the stack) gets
    SIGTERM and stops its components in order (the launcher's stand-in last, after the
    hub's stand-in exited), as Ctrl-C would. Without the keeper the killed process
    stops nothing and its children all get SIGTERM at once."""
    pids, order = tmp_path / "pids", tmp_path / "order"
    outer = subprocess.Popen([sys.executable, "-c", f"""
import signal, subprocess, threading
from ecluse.dev.supervisor import die_with_parent, run_in_keeper

def run():
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    hub = subprocess.Popen({SLEEPER!r}, preexec_fn=die_with_parent(signal.SIGKILL))
    launcher = subprocess.Popen({SLEEPER!r}, preexec_fn=die_with_parent(signal.SIGKILL))
    open({str(pids)!r}, "w").write(f"{{hub.pid}} {{launcher.pid}}")
    stop.wait()
    for name, proc in (("hub", hub), ("launcher", launcher)):
        proc.terminate()
        proc.wait()
        with open({str(order)!r}, "a") as f:
            f.write(name + " ")
    return 0

raise SystemExit(run_in_keeper(run))
"""])
    procs.append(outer)
    assert wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, 30)
    hub, launcher = (int(p) for p in pids.read_text().split())
    try:
        assert alive(hub) and alive(launcher)
        outer.kill()
        outer.wait(10)
        assert wait_for(lambda: order.exists() and order.read_text() == "hub launcher ", 30), \
            order.read_text() if order.exists() else "nothing stopped"
        assert not alive(hub) and not alive(launcher)
    finally:
        for pid in (hub, launcher):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
