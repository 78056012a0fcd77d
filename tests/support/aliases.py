"""Second login names on real slapd entries (``uid: carol`` + ``uid: c.petit``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ldap3


@contextmanager
def second_names(slapd: Any, names: dict[str, str]) -> Iterator[None]:
    """Add ``names`` (uid -> another uid value of the same entry); removed on exit."""
    with slapd.admin_connection() as conn:
        for uid, alias in names.items():
            conn.modify(slapd.user_dn(uid), {"uid": [(ldap3.MODIFY_ADD, [alias])]})
    try:
        yield
    finally:
        with slapd.admin_connection() as conn:
            for uid, alias in names.items():
                conn.modify(slapd.user_dn(uid), {"uid": [(ldap3.MODIFY_DELETE, [alias])]})
