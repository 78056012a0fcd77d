"""One person, one identity: who a name stands for, as the directory says.

A directory entry may carry several login names (``uid: carol``,
``uid: c.petit``), and two entries may share a ``uidNumber`` (an admin and a
day-to-day account of one person). The hub names a person by the entry's
canonical uid (:meth:`ecluse.directory.Directory.canonical_name`); whatever
counts people — the airlock's independent reviewers above all — compares
:class:`Person` values, never bare names: two names are one person when they
resolve to the same entry (DN) or to the same ``uidNumber``.

:class:`People` asks the directory (blocking: call it from a thread);
:class:`~ecluse.directory.DirectoryUnavailable` means nothing is known, and
callers that decide on it refuse (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .directory import Directory, DirectoryUser, normalize_dn


@dataclass(frozen=True)
class Person:
    """A name with what the directory said about it (``dn``/``uid_number`` unknown: None)."""

    name: str
    dn: str | None = None
    uid_number: int | None = None

    @classmethod
    def of(cls, user: DirectoryUser) -> Person:
        return cls(user.username, normalize_dn(user.dn), int(user.uid_number))

    def keys(self) -> dict[str, str]:
        """What tells people apart: the name (case-folded), the entry, the uidNumber."""
        keys = {"name": self.name.strip().lower()}
        if self.dn:
            keys["dn"] = normalize_dn(self.dn)
        if self.uid_number is not None:
            keys["uidNumber"] = str(self.uid_number)
        return keys

    def same_as(self, other: Person) -> str | None:
        """Why ``self`` and ``other`` are one person (``None``: two people)."""
        mine, theirs = self.keys(), other.keys()
        if mine.get("dn") and mine.get("dn") == theirs.get("dn"):
            return f"one directory entry, {mine['dn']}"
        if mine.get("uidNumber") and mine.get("uidNumber") == theirs.get("uidNumber"):
            return f"one uidNumber, {mine['uidNumber']}"
        if mine["name"] == theirs["name"]:
            return "one name"
        return None


def distinct(people: list[Person]) -> list[Person]:
    """``people`` with every person once (the first of their names kept)."""
    out: list[Person] = []
    for p in people:
        if not any(p.same_as(q) for q in out):
            out.append(p)
    return out


class People:
    """Resolves names to :class:`Person` through the directory (blocking).

    Raises :class:`~ecluse.directory.UnknownUser` or
    :class:`~ecluse.directory.InvalidUsername` for a name the directory does
    not know, :class:`~ecluse.directory.DirectoryUnavailable` when it does
    not answer.
    """

    def __init__(self, settings: Any, directory: Directory | None = None) -> None:
        self.directory = directory or Directory(settings.ldap)

    def __call__(self, name: str) -> Person:
        return Person.of(self.directory.lookup(name))
