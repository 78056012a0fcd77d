"""Settings at the bottom, imports at the top (issue 16 item 2), by reading the source.

* ``ecluse.config`` (and the settings sections it is built from, ``ecluse.settings``)
  imports no service package;
* a function imports one of the project's own modules only when the import is
  deferred on purpose, marked by a ``# deferred: <why>`` comment on the import
  or on the line above it;
* each module of ``ecluse.sdc`` imports only the modules listed above it in the
  package's map (its docstring), so its imports run one way, without cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ecluse
import ecluse.sdc

SRC = Path(ecluse.__file__).parent
SERVICES = ("airlock", "batch", "dask", "hub", "hubservice", "sandbox", "cli", "dev", "mirror")

#: packages whose functions defer every import of their own on purpose (none: the
#: command line marks each import it defers for start-up time, like everyone else)
DEFERRED_PACKAGES: set[str] = set()
#: modules not brought in line yet, and why (issue 16 item 2 is open for them)
PENDING: dict[str, str] = {}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _own(node: ast.AST, module: str, is_package: bool) -> str | None:
    """The project module an import names, or None."""
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            return ".".join([*base, *([node.module] if node.module else [])])
        name = node.module or ""
    elif isinstance(node, ast.Import):
        name = next((a.name for a in node.names if a.name.split(".")[0] == "ecluse"), "")
    else:
        return None
    return name if name.split(".")[0] == "ecluse" else None


def _sources():
    for path in sorted(SRC.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        yield path, _module(path), ast.parse(path.read_text())


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_settings_import_no_service():
    for path, module, tree in _sources():
        if not (module == "ecluse.config" or _within(module, ["ecluse.settings"])):
            continue
        for node in ast.walk(tree):
            target = _own(node, module, path.name == "__init__.py")
            if target:
                top = target.split(".")[1] if "." in target else ""
                assert top not in SERVICES, f"{module} imports {target} (a service)"


def test_i18n_imports_no_project_module():
    """``ecluse.i18n`` is at the bottom, beside the settings: the hub, the airlock and the
    directory's users translate through it; it imports none of Écluse's modules."""
    for _path, module, tree in _sources():
        if module != "ecluse.i18n":
            continue
        targets = [_own(node, module, False) for node in ast.walk(tree)]
        assert [t for t in targets if t] == [], f"{module} imports Écluse modules"
        return
    raise AssertionError("ecluse.i18n not found")


def test_function_local_imports_of_the_project_are_deliberate():
    unmarked = []
    for path, module, tree in _sources():
        if _within(module, DEFERRED_PACKAGES) or _within(module, PENDING):
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if _own(node, module, path.name == "__init__.py") is None:
                    continue
                here = lines[node.lineno - 1]
                above = lines[node.lineno - 2] if node.lineno > 1 else ""
                if "# deferred:" not in here and not above.strip().startswith("# deferred:"):
                    unmarked.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: "
                                    f"{here.strip()}")
    assert not sorted(set(unmarked)), "\n".join(["imports to move to the top:",
                                                 *sorted(set(unmarked))])


def test_the_scan_sees_an_unmarked_import(tmp_path):
    """The rule above can fail: a function importing a project module unmarked is found."""
    tree = ast.parse("def f():\n    from ..audit import AuditLog\n")
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert _own(node, "ecluse.hub.spawner", False) == "ecluse.audit"
    assert _own(node, "ecluse.hub", True) == "ecluse.audit" != None


def _sdc_layers(doc: str) -> list[str]:
    """The modules of the map in ``ecluse.sdc``'s docstring, bottom first."""
    block = doc.split("listed above it", 1)[1].split("::", 1)[1]
    names = []
    for line in block.splitlines()[1:]:
        if not line.strip():
            if names:
                break
            continue
        names.append(line.split()[0])
    return names


def _sdc_imports(path: Path, module: str) -> set[str]:
    """The ``ecluse.sdc`` modules a module of it imports (anywhere in the file)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        target = _own(node, module, path.name == "__init__.py")
        if target and target.startswith("ecluse.sdc."):
            out.add(target.split(".")[2])
        elif target == "ecluse.sdc" and isinstance(node, ast.ImportFrom):
            out.update(a.name for a in node.names)  # from . import check
    return out


def _layer_breaks(order: list[str], imports: dict[str, set[str]]) -> list[str]:
    rank = {name: k for k, name in enumerate(order)}
    breaks = [f"{m} is not in the map of ecluse.sdc" for m in imports if m not in rank]
    for m, targets in sorted(imports.items()):
        for t in sorted(targets):
            if m in rank and rank.get(t, len(order)) >= rank[m]:
                breaks.append(f"ecluse.sdc.{m} imports {t}, listed below it (or not listed)")
    return breaks


def test_sdc_modules_import_only_those_listed_above_them():
    order = _sdc_layers(ecluse.sdc.__doc__)
    imports = {path.stem: _sdc_imports(path, f"ecluse.sdc.{path.stem}")
               for path in sorted((SRC / "sdc").glob("*.py")) if path.name != "__init__.py"}
    assert sorted(order) == sorted(imports), "the map lists exactly the modules of ecluse.sdc"
    assert not _layer_breaks(order, imports), "\n".join(_layer_breaks(order, imports))


def test_the_sdc_map_sees_an_import_upwards():
    """The rule above can fail: a reader importing the module that dispatches to it is found."""
    order = ["report", "carriers", "readers", "check"]
    assert _layer_breaks(order, {"readers": {"carriers"}, "check": {"readers"}}) == []
    assert _layer_breaks(order, {"carriers": {"check"}}) == [
        "ecluse.sdc.carriers imports check, listed below it (or not listed)"]
    assert _layer_breaks(order, {"carriers": {"carriers"}}) != []
    assert _layer_breaks(order, {"new": {"report"}}) == ["new is not in the map of ecluse.sdc"]


def test_the_mirror_imports_no_other_service_but_the_sandbox_address():
    """``ecluse.mirror`` (the package mirror) stands beside the services: it imports the
    settings, secrets, the hub-service helpers and the sandbox host address, never the hub,
    the airlock, batch, dask, the command line or the development stack."""
    allowed = {"mirror", "settings", "secrets", "hubservice", "sandbox"}
    for path, module, tree in _sources():
        if not _within(module, ["ecluse.mirror"]):
            continue
        for node in ast.walk(tree):
            target = _own(node, module, path.name == "__init__.py")
            if target:
                top = target.split(".")[1] if "." in target else ""
                assert top in allowed, f"{module} imports {target}"
