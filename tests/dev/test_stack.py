"""The embedded stack's supervised components (:meth:`ecluse.dev.stack.Stack.supervised`)."""

from __future__ import annotations

from ecluse.config import load_settings
from ecluse.dev.stack import HUB_RESTART_WAIT, Stack


class HubStartRecorder(Stack):
    """A stack whose hub start records how long it would wait for the hub, and starts
    nothing."""

    def start_hub(self, timeout: float = 60) -> None:
        self.waits.append(timeout)


def test_a_restarted_hub_is_waited_for_longer_than_a_workspace(make_config) -> None:
    """A restarted hub starts its route filter, proxy and services again: on a loaded
    host it answered after 106 s, which sandbox.start_timeout (120 s) barely covered;
    the supervisor would kill a hub slower than that and start it again, in a loop."""
    settings = load_settings(make_config())
    stack = HubStartRecorder(settings)
    stack.waits = []
    (hub,) = [c for c in stack.supervised() if c.name == "hub"]
    hub.start()
    assert stack.waits == [HUB_RESTART_WAIT]
    assert HUB_RESTART_WAIT >= 2 * settings.sandbox.start_timeout
