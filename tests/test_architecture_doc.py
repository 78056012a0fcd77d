"""The layout in ``docs/architecture.md`` matches ``src/ecluse`` (issue 16 item 1).

The table under "Python package `src/ecluse/`" names every module, one line each
or one line shared with its siblings (`` `hub/mfa`, `hub/mfaweb` ``): its first
column is a list of names relative to ``src/ecluse``, a package written ``pkg/``.
A package named ``pkg/`` covers its ``__init__``; ``__main__`` modules need no line;
a folder without ``__init__`` (the Alembic ``airlock/migrations/``) covers what it
holds. The moved hub side keeps its old names as deprecated aliases, and the
installed entry points resolve to ``ecluse.hub``.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from pkgutil import resolve_name

import pytest

import ecluse
import ecluse.hub
import ecluse.hub.auth
import ecluse.hub.oidc
import ecluse.hub.spawner

SRC = Path(ecluse.__file__).parent
ROOT = SRC.parents[1]
DOC = ROOT / "docs" / "architecture.md"
HEADING = "## Python package `src/ecluse/`"


def table_names(text: str) -> list[str]:
    """The names in the first column of the package table, in order."""
    start = text.index(HEADING) + len(HEADING)
    end = text.find("\n## ", start)
    names = []
    for line in text[start:None if end < 0 else end].splitlines():
        cells = line.split("|")
        if not line.startswith("|") or len(cells) < 3 or set(cells[1].strip()) <= {"-"}:
            continue
        first = cells[1].strip()
        if first == "module":
            continue
        found = re.findall(r"`([^`]+)`", first)
        assert found and re.fullmatch(r"`[^`]+`(, `[^`]+`)*", first), \
            f"docs/architecture.md: first column {first!r} is not a list of `module` names"
        names += found
    return names


def modules(src: Path) -> set[str]:
    """Every module of the package that needs a line: ``a/b`` for ``a/b.py``."""
    out = set()
    for path in src.rglob("*.py"):
        rel = path.relative_to(src)
        if rel.name == "__main__.py" or rel == Path("__init__.py"):
            continue
        if any(not (src / Path(*rel.parts[:i]) / "__init__.py").exists()
               for i in range(1, len(rel.parts))):
            continue  # inside a folder that is no package: its own line covers it
        out.add(rel.with_suffix("").as_posix())
    return out


def mismatches(names: list[str], src: Path) -> tuple[list[str], list[str]]:
    """(modules the table does not name, names in the table that are no module or package)."""
    unknown = []
    covered = set()
    for name in names:
        if name.endswith("/"):
            folder = src / name.rstrip("/")
            if not folder.is_dir():
                unknown.append(name)
            elif (folder / "__init__.py").exists():
                covered.add(f"{name}__init__")
        elif (src / f"{name}.py").is_file():
            covered.add(name)
        else:
            unknown.append(name)
    missing = sorted(modules(src) - covered)
    return missing, unknown


def test_the_table_names_every_module_and_nothing_else():
    missing, unknown = mismatches(table_names(DOC.read_text()), SRC)
    problems = [f"no line for {', '.join(missing)}"] if missing else []
    problems += [f"{', '.join(unknown)}: no such module or package in src/ecluse"] if unknown else []
    assert not problems, "docs/architecture.md, table \"Python package `src/ecluse/`\": " \
        + "; ".join(problems)


def test_a_deleted_line_and_a_stale_name_are_reported():
    """The check itself, on a table of its own: a module without a line, a line without a module."""
    rows = [f"| `{name}` | what it is for |" for name in sorted(modules(SRC)) if name != "sdc/sniff"]
    rows.append("| `sdc/check`, `sdc/gone`, `nowhere/` | what they are for |")
    text = "\n".join(["# Architecture", HEADING, "", "| module | concept |", "|---|---|", *rows,
                      "", "## Next", "| `not/in/the/table` | |"])
    assert mismatches(table_names(text), SRC) == (["sdc/sniff"], ["sdc/gone", "nowhere/"])


@pytest.mark.parametrize(("old", "cls", "new"), [
    ("ecluse.auth", "EcluseAuthenticator", ecluse.hub.auth),
    ("ecluse.spawner", "EcluseSpawner", ecluse.hub.spawner),
])
def test_old_hub_names_are_deprecated_aliases(old, cls, new):
    # reload runs the module again, so an import cached by another test cannot hide it
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: use {new.__name__}\.{cls}"):
        alias = importlib.reload(importlib.import_module(old))
    assert getattr(alias, cls) is getattr(new, cls)


def test_entry_points_resolve_to_the_hub_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        ("console_scripts", "ecluse-hub"): project["scripts"]["ecluse-hub"],
        **{(group, name): value for group, points in project["entry-points"].items()
           for name, value in points.items()},
    }
    expected = {
        ("console_scripts", "ecluse-hub"): ecluse.hub.main,
        ("jupyterhub.authenticators", "ecluse"): ecluse.hub.auth.EcluseAuthenticator,
        ("jupyterhub.authenticators", "ecluse-oidc"): ecluse.hub.oidc.EcluseOIDCAuthenticator,
        ("jupyterhub.spawners", "ecluse"): ecluse.hub.spawner.EcluseSpawner,
    }
    assert set(declared) == set(expected)
    for (group, name), value in declared.items():
        # by its new name: the deprecated aliases resolve to the same objects
        assert re.match(r"ecluse\.hub[.:]", value), f"pyproject.toml: {name} = {value}"
        assert resolve_name(value) is expected[group, name], f"pyproject.toml: {name} = {value}"
        installed = {e.name: e for e in entry_points(group=group)}
        assert installed[name].value == value, \
            f"installed entry point {group}:{name} is stale: pip install -e ."
        assert installed[name].load() is expected[group, name]
