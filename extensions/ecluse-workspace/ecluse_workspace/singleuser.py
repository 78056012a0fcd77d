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

It also makes the server **non-dumpable** (``prctl(PR_SET_DUMPABLE, 0)``)
before anything else runs: the guard lives in this process, and the
researcher's kernels and terminals run as the same uid next to it. A
non-dumpable process's ``/proc/<pid>/mem``, ``environ``, ``fd/…`` and
``ptrace`` belong to root, so a kernel can neither read the server's memory
(its hub token, the guard's state) nor patch the guard out of it. Children
(kernels, terminals) are started through ``execve``, which makes them
dumpable again: they keep their own ``/proc`` and debuggers. A start where
``prctl`` fails is refused (fail closed).

Everything else is ``jupyterhub.singleuser.main``, unchanged: same options,
same configuration, same hub authentication.

It refuses to start when the user site (``~/.local/lib/python3.X/site-packages``)
is on its ``sys.path``: researchers ``pip install --user`` there, and a module
named like the guard's, a ``.pth`` file or ``usercustomize`` there would run in
this process. The spawner starts it with ``python -s``; kernels and terminals,
its children, start without ``-s`` and do read the user site.
"""

from __future__ import annotations

import os
import sys

#: optional modules a workspace server never needs and must not pay for
SKIPPED_IMPORTS = ("rfc3987_syntax",)


PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


class NotDumpableError(RuntimeError):
    """The server could not make itself non-dumpable: it does not start."""


def make_non_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``, checked with ``PR_GET_DUMPABLE``."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise NotDumpableError(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(err)}")
    if libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise NotDumpableError("the workspace server is still dumpable after prctl")


class UserSiteError(RuntimeError):
    """The user site is on the server's ``sys.path``."""


def check_no_user_site() -> None:
    """Raise :class:`UserSiteError` unless this interpreter ignores the user site."""
    import site

    user_site = site.getusersitepackages()
    if site.ENABLE_USER_SITE or any(
            p and os.path.realpath(p).startswith(os.path.realpath(user_site))
            for p in sys.path):
        raise UserSiteError(
            f"the user site {user_site} is on the server's sys.path: start it with "
            "python -s (or PYTHONNOUSERSITE=1 for this process only)")


def main(argv: list[str] | None = None) -> int | None:
    try:
        check_no_user_site()
        make_non_dumpable()
    except (OSError, AttributeError, NotDumpableError, UserSiteError) as e:
        sys.stderr.write(f"ecluse-singleuser: refusing to start: {e}\n")
        return 1
    for name in SKIPPED_IMPORTS:
        # ``None`` in sys.modules makes ``import name`` raise ImportError, which
        # is what jsonschema expects from a missing optional dependency
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from jupyterhub.singleuser import main as singleuser_main

    return singleuser_main(argv)


if __name__ == "__main__":
    sys.exit(main())
