"""The package mirror of workspaces: one package source that leaks nothing.

A caching PyPI proxy (proxpi, :mod:`.backend`) on loopback, behind a filtering
front of ours (:mod:`.front`) on the sandbox host address. The front answers
per project — the project named by the workspace's token, an HMAC under the
mirror's key that the spawner puts in ``PIP_INDEX_URL`` — and only for the
names on that project's allow-list (:mod:`.allowlist`): a name not on the list
is refused by the front and never reaches the backend, so no upstream request
is made for it (a lookup is itself an outbound message). Staff allow a package
with its dependency closure resolved and pinned at approval
(``ecluse packages allow``); the front serves those versions only.
"""
