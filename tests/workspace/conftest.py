"""Fixtures of the workspace-extension tests (``extensions/ecluse-workspace``).

* ``workspace_extension`` (session) — runs ``extensions/build.sh`` (idempotent:
  a no-op when the installed extension matches the sources), so the
  extension is installed, non-editable, in the environment sandboxes mount.
* ``workspace_hub`` (module) — :class:`ecluse.dev.stack.Stack` with
  ``hub.spawner: ecluse`` (real sandboxes) and the hub-managed airlock on a
  free port, against the session ``slapd``; stopped, with its sandboxes and
  host network, afterwards.
* ``start_workspace(user, project)`` — signs ``user`` in through the hub
  form, starts the project workspace, waits until it answers; returns a
  :class:`Workspace` (client, token, server URL).
"""

from __future__ import annotations

from tests.workspace.helpers import (  # noqa: F401
    start_workspace,
    workspace_extension,
    workspace_hub,
)
