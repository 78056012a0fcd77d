"""Helpers shared by the test suites (not tests themselves).

* :mod:`.hubstack` — the one hub harness: :class:`ecluse.dev.stack.Stack` (what
  ``ecluse up`` runs) on a suite's configuration, with the options suites need
  (services waited for, users from the directory or from the test, sandbox backend);
* :mod:`.jupyterhub_config` — its hub configuration with ``users=``: the
  deployment's, then who signs in;
* :mod:`.doubles` — the test doubles that hub loads by name;
* :mod:`.leftovers` — the processes a session started and left running (the
  session-end check of ``tests/conftest.py``);
* :mod:`.sandboxes` — the tracking sandbox backend;
* :mod:`.canary` — row-level canary files planted in workspaces and looked for in answers.
"""
