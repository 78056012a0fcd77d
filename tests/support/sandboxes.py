"""The tracking sandbox backend every suite that starts real sandboxes uses.

:class:`TrackingLocalSandbox` is a real ``LocalSandbox`` that records what it
did: the slot of every sandbox it allocated (:data:`CREATED`, which the leak
checks of tests/sandbox and tests/batch walk at the end of the session) and
the spec of every launch (:data:`LAUNCHED`, which tests read to see what was
asked of the sandbox).
"""

from __future__ import annotations

import sys
from typing import Any

from ecluse.sandbox.local import LocalSandbox

#: sandbox id -> slot, every sandbox a tracking backend of this run allocated
CREATED: dict[str, int] = {}
#: ``{"id", "spec"}`` of every launch of a tracking backend, in order
LAUNCHED: list[dict[str, Any]] = []


class TrackingLocalSandbox(LocalSandbox):
    """A real LocalSandbox that records the ids it allocated and the specs it launched."""

    python = sys.executable  # the interpreter inside the sandbox (tests run it)

    def _allocate(self, meta: dict[str, Any]) -> int:
        slot = super()._allocate(meta)
        CREATED[meta["id"]] = slot
        return slot

    async def launch(self, spec: Any, *, one_shot: bool = False) -> dict[str, Any]:
        state = await super().launch(spec, one_shot=one_shot)
        LAUNCHED.append({"id": state["id"], "spec": spec})
        return state
