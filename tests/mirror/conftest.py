"""Fixtures of the mirror's tests: a local upstream index and a deployment's config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.pypi import LocalIndex

PROJECTS = {"projects": {
    "cardio-los": {"title": "Cardiac LOS", "ldap_group": "proj-cardio-los"},
    "air-quality": {"title": "Air quality", "ldap_group": "proj-air-quality"},
}}


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[LocalIndex]:
    """alpha 1.0 (needs beta>=1.0), beta 1.0, gamma 1.0 and secretpkg 1.0, served on
    loopback; every request path recorded."""
    index = LocalIndex(tmp_path / "upstream")
    index.add("alpha", "1.0", requires=("beta>=1.0",))
    index.add("beta", "1.0")
    index.add("gamma", "1.0")
    index.add("secretpkg", "1.0")
    index.start()
    try:
        yield index
    finally:
        index.stop()


def write_config(folder: Path, **mirror) -> Path:
    """``ecluse.yaml`` and ``projects.yaml`` with a ``mirror:`` section of ``mirror``."""
    (folder / "projects.yaml").write_text(yaml.safe_dump(PROJECTS))
    cfg = folder / "ecluse.yaml"
    cfg.write_text(yaml.safe_dump({
        "state_dir": "state", "projects_file": "projects.yaml",
        "ldap": {"uri": "ldap://127.0.0.1:1", "security": "none", "base_dn": "dc=test",
                 "bind_dn": "cn=svc,dc=test", "user_search_base": "ou=people,dc=test",
                 "group_search_base": "ou=groups,dc=test"},
        "mirror": mirror,
    }))
    return cfg
