"""JupyterHub configuration for Écluse (logic lives here, not in config files),
and ``ecluse-hub``, the command that runs the hub.

``ecluse-hub`` is ``jupyterhub`` (same options, same configuration file)
without one optional import: ``jupyter_events`` validates with
``jsonschema``, which imports ``rfc3987_syntax`` when it is installed, and
that module compiles an Earley grammar for IRI formats at import time —
about 3 s of CPU at every hub start, for a format no JupyterHub or Jupyter
event schema uses. Without the module, ``jsonschema`` leaves the two ``iri``
formats unchecked, exactly as on an installation without that optional
dependency. Workspaces do the same with ``ecluse-singleuser``.
"""

from __future__ import annotations

import sys

#: optional modules the hub never needs and must not pay for at each start
SKIPPED_IMPORTS = ("rfc3987_syntax",)


def main(argv: list[str] | None = None) -> int | None:
    for name in SKIPPED_IMPORTS:
        # None in sys.modules: ``import name`` raises ImportError, which is how
        # jsonschema finds a missing optional dependency
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from jupyterhub.app import main as jupyterhub_main

    return jupyterhub_main(argv)
