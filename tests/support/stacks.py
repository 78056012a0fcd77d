"""A running :class:`ecluse.dev.stack.Stack` for a fixture: started, yielded, stopped.

The stack is stopped, and its log closed, even when its start fails half-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def running_stack(settings: Any, log_path: Path, stack_class: type | None = None,
                  **kwargs: Any) -> Iterator[Any]:
    """Start ``stack_class`` (default :class:`ecluse.dev.stack.Stack`) with its hub's
    output in ``log_path``; stop it on exit."""
    from ecluse.dev.stack import Stack

    with open(log_path, "wb") as log:
        stack = (stack_class or Stack)(settings, hub_log=log, **kwargs)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()
