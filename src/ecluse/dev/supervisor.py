"""What ``ecluse up`` does while the stack runs: restart a component that dies.

A :class:`Supervisor` watches a list of :class:`Supervised` components (the
embedded slapd, the hub; the stack says which, :meth:`ecluse.dev.stack.Stack.supervised`).
When one exits, it is started again — not the whole stack torn down — with an
exponential back-off between failed attempts, each death and restart logged and
audited (``platform.component_restarted``, with the exit status and how long the
component was down). A component that cannot be started ``max_failures`` times
in a row is given up: :class:`SupervisorGaveUp`, and ``ecluse up`` stops.

``ecluse up`` runs the stack in a child process of its own, the keeper
(:func:`run_in_keeper`), which stops it in order when ``ecluse up`` is killed.

The hub's own children are the hub's business: JupyterHub restarts a dead proxy
(within ``check_running_interval``) and dead services (their poll), and a hub
that starts stops what a killed hub left (:mod:`ecluse.hubservice.instances`,
the proxy's and the route filter's pid files) and re-adopts running workspaces.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..auditevents import AuditEvent

log = logging.getLogger(__name__)

#: the audit event of a restart
RESTARTED = AuditEvent.PLATFORM_COMPONENT_RESTARTED

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the process that started it dies
    (``ecluse up`` killed with SIGKILL stops its hub and slapd as Ctrl-C would)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


def run_in_keeper(run: Callable[[], int]) -> int:
    """Run ``run`` in a child process, the *keeper*, and return its exit status.

    The keeper owns the stack (its components are the keeper's children, each
    with :func:`die_with_parent` on the keeper) and gets SIGTERM when this process
    dies. ``ecluse up`` killed with SIGKILL is then stopped as Ctrl-C stops it, by
    the same code, in order: the services, the hub (which stops its workspaces
    through the launcher), what the hub left, and only then the launcher, slapd,
    the engine and the state volume. Without the keeper every component got
    SIGTERM at once and the launcher could go before the hub had stopped its
    sandboxes through it (the hub, not root, cannot stop them itself).

    This process only forwards SIGTERM, SIGINT and SIGHUP to the keeper and waits;
    a killed keeper (SIGKILL of the child itself) leaves what the next ``ecluse up``
    stops at its start (:meth:`ecluse.dev.stack.Stack.stop_stale_hub`, the services'
    mark)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the keeper
        code = 1
        try:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # its parent's death says stop
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() == parent:  # else it died before the prctl: nothing started
                code = run()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - said, and the keeper's status is 1
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(code)

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)  # interrupted by a forwarded signal: retried (PEP 475)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


@dataclass
class Supervised:
    """One component: how to start and stop it, and its exit status (None: running)."""

    name: str
    start: Callable[[], None]
    stop: Callable[[], None]
    exit_status: Callable[[], int | None]
    # supervisor's bookkeeping
    failures: int = field(default=0, repr=False)
    down_since: float | None = field(default=None, repr=False)
    next_attempt: float = field(default=0.0, repr=False)
    status: int | None = field(default=None, repr=False)


class SupervisorGaveUp(RuntimeError):
    pass


class Supervisor:
    """Restart dead components with back-off; :meth:`poll` once per tick."""

    def __init__(self, components: list[Supervised], *, audit: Any | None = None,
                 backoff: float = 1.0, max_backoff: float = 60.0, max_failures: int = 6,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.components = components
        self.audit = audit
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_failures = max_failures
        self.clock = clock
        #: (name, exit status, seconds down) of every restart, in order
        self.restarts: list[tuple[str, int | None, float]] = []

    def poll(self) -> None:
        for c in self.components:
            self._check(c)

    def _check(self, c: Supervised) -> None:
        now = self.clock()
        if c.down_since is None:
            status = c.exit_status()
            if status is None:
                return
            c.down_since, c.status, c.next_attempt = now, status, now
            log.error("%s exited with status %s: restarting it", c.name, status)
        if now < c.next_attempt:
            return
        try:
            c.stop()  # whatever is left of it (its process object, files)
            c.start()
        except Exception as e:  # noqa: BLE001 - any failure to start is retried
            c.failures += 1
            delay = min(self.backoff * 2 ** (c.failures - 1), self.max_backoff)
            if c.failures >= self.max_failures:
                self._record(c, "failure", error=str(e), attempts=c.failures)
                raise SupervisorGaveUp(
                    f"{c.name} exited with status {c.status} and could not be started "
                    f"again after {c.failures} attempts: {e}") from e
            log.error("%s could not be started again (attempt %d): %s; next attempt in "
                      "%.0f s", c.name, c.failures, e, delay)
            c.next_attempt = self.clock() + delay
            return
        down = self.clock() - c.down_since
        log.warning("%s restarted after %.1f s (exit status %s)", c.name, down, c.status)
        self.restarts.append((c.name, c.status, down))
        self._record(c, "success", seconds_down=round(down, 3), attempts=c.failures + 1)
        c.failures, c.down_since, c.status = 0, None, None

    def _record(self, c: Supervised, outcome: str, **details: Any) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(RESTARTED, actor="ecluse-up", outcome=outcome,
                              component=c.name, exit_status=c.status, **details)
        except Exception:  # noqa: BLE001 - a restart is not undone for its audit record
            log.exception("could not audit the restart of %s", c.name)

    def stop(self) -> None:
        """Stop every component, last started first."""
        errors = []
        for c in reversed(self.components):
            try:
                c.stop()
            except Exception as e:  # noqa: BLE001 - stop the others too
                log.exception("could not stop %s", c.name)
                errors.append(e)
        if errors:
            raise errors[0]
