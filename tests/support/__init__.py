"""Helpers shared by the test suites (not tests themselves).

* :mod:`.hubservice` — a real JupyterHub with one hub-managed Écluse service;
* :mod:`.doubles` — the test doubles that hub loads by name;
* :mod:`.stacks` — a running :class:`ecluse.dev.stack.Stack` for a fixture;
* :mod:`.canary` — row-level canary files planted in workspaces and looked for in answers.
"""
