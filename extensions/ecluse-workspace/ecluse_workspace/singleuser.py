"""``ecluse-singleuser``: jupyterhub-singleuser, started lean for a workspace.

Every workspace start pays for the imports of Jupyter Server and its
extensions, and on a shared host twenty researchers starting at nine o'clock
pay it together. One import dominates and buys a workspace nothing:
``jupyter_events`` validates its event schemas with ``jsonschema``'s format
checkers, and ``jsonschema`` imports ``rfc3987_syntax`` when it is installed,
which compiles an Earley grammar for IRIs at import time (about 3 s of CPU
here, more than half of the server's whole start). No event schema of Jupyter
Server, JupyterLab or this extension uses the ``iri`` formats it checks;
without the module, ``jsonschema`` simply leaves those two formats unchecked,
as it does wherever the optional module is not installed.

Everything else is ``jupyterhub.singleuser.main``, unchanged: same options,
same configuration, same hub authentication.
"""

from __future__ import annotations

import sys

#: optional modules a workspace server never needs and must not pay for
SKIPPED_IMPORTS = ("rfc3987_syntax",)


def main(argv: list[str] | None = None) -> int | None:
    for name in SKIPPED_IMPORTS:
        # ``None`` in sys.modules makes ``import name`` raise ImportError, which
        # is what jsonschema expects from a missing optional dependency
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from jupyterhub.singleuser import main as singleuser_main

    return singleuser_main(argv)


if __name__ == "__main__":
    sys.exit(main())
