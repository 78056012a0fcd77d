"""Batch notebook runs: papermill inside a project sandbox, queued, audited.

Layers (each calls only the ones below it):

* :mod:`.runs` — statuses, transitions, audit events (tables) and the queue table;
* :mod:`.identity` — who acts (hub user, groups) and who a run executes as
  (an LDAP project member);
* :mod:`.service` — :class:`BatchService`: submit, list, show, logs, cancel,
  export (through the airlock's business layer);
* :mod:`.runner` — the queue runner mixed into the service: order,
  concurrency limit, one-shot sandbox per run, cancel, timeout, progress;
* :mod:`.files` — root-side file operations in ``/project/batch/<run-id>/``
  that never follow a link;
* :mod:`.driver` — what runs inside the sandbox (papermill + progress);
* :mod:`.web` — the tornado REST API behind hub token authentication;
* :mod:`.client` — the REST client the CLI uses;
* :mod:`.hub` — the hub service entry and roles.

See docs/batch.md.
"""

from __future__ import annotations

from ..settings.batch import BatchSettings, batch_settings
from .hub import batch_roles, batch_service_spec

__all__ = ["BatchSettings", "batch_roles", "batch_service_spec", "batch_settings"]
