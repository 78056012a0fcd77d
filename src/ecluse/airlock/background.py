"""Disclosure checks of uploaded files, off the upload's path (issue 21 item 1).

A sandboxed check costs seconds whatever the file (sandbox start, a fresh Python
importing the readers, the check, teardown) and only ``check_processes`` run at
once: an upload that waited for its check would answer in tens of seconds under
load. With background checks the service stages and hashes the bytes, records
the file with the verdict :data:`CHECKING` and answers at once; a bounded pool
of threads then checks the file and stores its verdict, report and preview.

* Durable: the verdict ``checking`` is in the database, so an airlock that stops
  before a check ends finds the file again when it starts
  (:meth:`~ecluse.airlock.service.AirlockService.requeue_checks`).
* Fail closed: a check that crashes, times out or gives no usable report leaves
  the file ``review`` with the reason (never ``pass``); a file is never ``pass``
  before its check finished.
* A request with a file still ``checking`` cannot be submitted (the refusal says
  how many files are being checked); the set judgement (differencing against the
  other files and the ledger) runs when the last check of the request ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)

#: the verdict of a file whose check has not finished (stored in ``files.verdict``)
CHECKING = "checking"


class BackgroundChecks:
    """A bounded pool of threads, each running ``check(file_id, sha256)`` for one file.

    A file queued twice (a restart's re-queue meeting an upload's own) runs once. The
    key holds the sha256: a file replaced while checked may get its row id back
    (SQLite reuses the largest), and the new bytes need a check of their own.
    """

    def __init__(self, check: Callable[[int, str], None], workers: int = 2) -> None:
        self._check = check
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="airlock-bg-check")
        self._lock = threading.Lock()
        self._queued: dict[tuple[int, str], Future] = {}
        self._closed = False

    def submit(self, file_id: int, sha256: str) -> Future | None:
        """Queue the check of ``file_id`` (``None``: the pool is shut down; the file
        stays ``checking`` and is queued again when the airlock next starts)."""
        with self._lock:
            if self._closed:
                return None
            key = (file_id, sha256)
            if key in self._queued:
                return self._queued[key]
            future = self._pool.submit(self._run, key)
            self._queued[key] = future
            return future

    def _run(self, key: tuple[int, str]) -> None:
        try:
            self._check(*key)
        except Exception:  # the file stays ``checking``: re-queued at the next start
            log.exception("background check of file %s failed", key[0])
        finally:
            with self._lock:
                self._queued.pop(key, None)

    def pending(self) -> list[int]:
        """Files queued or being checked now."""
        with self._lock:
            return sorted({fid for fid, _ in self._queued})

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every check queued so far has ended (tests, shutdown)."""
        with self._lock:
            futures = list(self._queued.values())
        for f in futures:
            f.exception(timeout=timeout)

    @property
    def closed(self) -> bool:
        """Shut down: a check ending now may have been cut short by the shutdown (its
        sandbox stopped): its result is not stored, the file is checked again at start."""
        return self._closed

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
