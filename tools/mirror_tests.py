#!/usr/bin/env python3
"""Move the tests so that they mirror ``src/ecluse`` (issue 16 item 5).

A module's tests are found by its path: ``src/ecluse/hub/spawner.py`` ->
``tests/hub/test_spawner.py`` (or ``tests/hub/test_spawner_<topic>.py``);
``src/ecluse/audit.py`` -> ``tests/test_audit.py``. Suites that cross modules
keep folders named for what they test: ``tests/functional`` (browser),
``tests/deploy``, ``tests/stack`` (the whole stack: hub, sandboxes, services
together), ``tests/workspace`` (the workspace extension,
``extensions/ecluse-workspace``). Helpers live in ``tests/support``.

Re-runnable and idempotent: each entry of MOVES is ``git mv``-ed when its
source exists and its target does not; a moved file's relative imports
become absolute and its ``Path(__file__).parents[n]`` follow the new depth;
then every ``tests.<old>`` module name and ``tests/<old>.py`` path in the
repository's tracked text files is rewritten. A second run changes nothing.
It reports the test files it did not place (not under a folder that mirrors
``src/ecluse`` or a cross-module suite, or not named for a module).

    python tools/mirror_tests.py [--dry-run] [ROOT]
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

#: old path -> new path (relative to the repository)
MOVES: dict[str, str] = {
    # tests/unit: by module
    "tests/unit/test_audit.py": "tests/test_audit.py",
    "tests/unit/test_auditevents.py": "tests/test_auditevents.py",
    "tests/unit/test_config.py": "tests/test_config.py",
    "tests/unit/test_hub_main.py": "tests/hub/test_main.py",
    "tests/unit/test_hubconfig.py": "tests/hub/test_hubconfig.py",
    "tests/unit/test_identity.py": "tests/hub/test_auth.py",
    "tests/unit/test_people.py": "tests/test_people.py",
    "tests/unit/test_routefilter.py": "tests/hub/test_routefilter.py",
    "tests/unit/test_routefilter_content.py": "tests/hub/test_routefilter_content.py",
    "tests/unit/test_layers.py": "tests/test_layers.py",
    "tests/unit/test_spawner_once.py": "tests/hub/test_spawner_once.py",
    "tests/unit/test_venv_base.py": "tests/deploy/test_venv_base.py",
    "tests/integration/chaos.py": "tests/stack/chaos.py",
    "tests/integration/test_airlock_user.py": "tests/stack/test_service_users.py",
    "tests/airlock/integration/test_ledger.py": "tests/airlock/test_ledger.py",
    "tests/airlock/integration/test_acro_results.py": "tests/airlock/test_acro_results.py",
    "tests/unit/test_supervisor.py": "tests/dev/test_supervisor.py",
    # tests/integration: by module, or the whole stack
    "tests/integration/rogue_hub_config.py": "tests/hub/rogue_hub_config.py",
    "tests/integration/test_audit_cli.py": "tests/cli/test_audit.py",
    "tests/integration/test_demo_users.py": "tests/dev/test_demo.py",
    "tests/integration/test_directory.py": "tests/test_directory.py",
    "tests/integration/test_group_dn.py": "tests/test_directory_group_dn.py",
    "tests/integration/test_identity_migration.py": "tests/test_identities.py",
    "tests/integration/test_hub_login.py": "tests/hub/test_auth_login.py",
    "tests/integration/test_one_person.py": "tests/hub/test_auth_one_person.py",
    "tests/integration/test_identity_hygiene.py": "tests/hub/test_roles_tokens.py",
    "tests/integration/test_mfa.py": "tests/hub/test_mfa.py",
    "tests/integration/test_oidc.py": "tests/hub/test_oidc.py",
    "tests/integration/test_reconcile.py": "tests/hub/test_reconcile.py",
    "tests/integration/test_route_filter.py": "tests/hub/test_routefilter_hub.py",
    "tests/integration/test_spawner.py": "tests/hub/test_spawner.py",
    "tests/integration/test_one_reviewer.py": "tests/airlock/test_permissions_one_reviewer.py",
    "tests/integration/test_disk_quota.py": "tests/stack/test_disk_quota.py",
    "tests/integration/test_launcher_stack.py": "tests/stack/test_launcher.py",
    "tests/integration/test_revocation.py": "tests/stack/test_revocation.py",
    "tests/integration/test_supervise.py": "tests/stack/test_supervise.py",
    # the airlock's unit/integration/functional split: by module instead
    "tests/airlock/unit/test_docs.py": "tests/airlock/test_docs.py",
    "tests/airlock/unit/test_hub_spec.py": "tests/airlock/test_hub.py",
    "tests/airlock/unit/test_migrations.py": "tests/airlock/test_migrations.py",
    "tests/airlock/unit/test_preview.py": "tests/airlock/test_preview.py",
    "tests/airlock/unit/test_rules.py": "tests/airlock/test_rules.py",
    "tests/airlock/unit/test_storage.py": "tests/airlock/test_storage.py",
    "tests/airlock/integration/test_api.py": "tests/airlock/test_web.py",
    "tests/airlock/integration/test_api_quota.py": "tests/airlock/test_web_quota.py",
    "tests/airlock/integration/test_token_project.py": "tests/airlock/test_web_token_project.py",
    "tests/airlock/functional/test_browser.py": "tests/airlock/test_web_browser.py",
    "tests/airlock/integration/test_check_sandbox.py": "tests/airlock/test_checkbox.py",
    "tests/airlock/integration/test_cli.py": "tests/cli/test_airlock.py",
    "tests/airlock/test_cli.py": "tests/cli/test_airlock.py",
    "tests/airlock/integration/test_file_access.py": "tests/airlock/test_service_file_access.py",
    "tests/airlock/integration/test_layout.py": "tests/airlock/test_service_layout.py",
    "tests/airlock/integration/test_service_permissions.py":
        "tests/airlock/test_service_permissions.py",
    "tests/airlock/integration/test_service_quota.py": "tests/airlock/test_service_quota.py",
    "tests/airlock/integration/test_service_rules.py": "tests/airlock/test_service_rules.py",
    # a top-level module's tests
    "tests/sandbox/test_statevolume.py": "tests/test_statevolume.py",
    # the services' folders: named for the module they test
    "tests/batch/test_api.py": "tests/batch/test_web.py",
    "tests/batch/test_queue.py": "tests/batch/test_runner_queue.py",
    "tests/batch/test_rules.py": "tests/batch/test_runs_rules.py",
    "tests/batch/test_side_doors.py": "tests/batch/test_service_side_doors.py",
    "tests/dask/test_host_address.py": "tests/dask/test_front.py",
    "tests/dask/test_hub.py": "tests/dask/test_gateway_hub.py",
    "tests/dask/test_workspace.py": "tests/dask/test_sizing_workspace.py",
    "tests/sandbox/test_hub_docker.py": "tests/sandbox/test_docker_hub.py",
}
#: folders of suites that cross modules (named for what they test)
CROSS = {"functional", "deploy", "stack", "workspace", "support"}
#: files under a mirrored folder that are not tests of one module, on purpose
HELPERS = {"conftest.py", "__init__.py", "hubstack.py", "pgserver.py", "guises.py",
           "helpers.py", "rogue_hub_config.py"}
#: tracked text files whose references to moved tests are rewritten
TEXT = re.compile(r"\.(py|md|toml|cfg|ini|yml|yaml|txt|sh|j2)$|(^|/)(Makefile|run)$")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True,
                          capture_output=True, text=True).stdout


def module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def absolute_imports(source: str, old: str) -> str:
    """``from ..x import y`` in the file at ``old`` -> ``from tests.x import y``."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    package = module(old).split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            line = lines[node.lineno - 1]
            lines[node.lineno - 1] = re.sub(r"from\s+\.+\s*" + re.escape(node.module or ""),
                                            f"from {target}", line, count=1)
    return "".join(lines)


def follow_depth(source: str, old: str, new: str) -> str:
    """``Path(__file__)....parents[n]`` still names the same folder after the move."""
    delta = new.count("/") - old.count("/")
    if not delta:
        return source
    return re.sub(r"(Path\(__file__\)(?:\.resolve\(\))?\.parents\[)(\d+)(\])",
                  lambda m: f"{m[1]}{int(m[2]) + delta}{m[3]}", source)


def ensure_packages(root: Path, path: str, dry: bool) -> None:
    folder = (root / path).parent
    while folder != root / "tests" and not (folder / "__init__.py").exists():
        print(f"create: {(folder / '__init__.py').relative_to(root)}")
        if not dry:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "__init__.py").write_text("")
            git(root, "add", str(folder / "__init__.py"))
        folder = folder.parent


def move(root: Path, dry: bool) -> dict[str, str]:
    done = {}
    for old, new in MOVES.items():
        src, dst = root / old, root / new
        if not src.exists():
            continue
        if dst.exists():
            print(f"conflict: {old} and {new} both exist; left alone")
            continue
        print(f"move: {old} -> {new}")
        done[old] = new
        if dry:
            continue
        ensure_packages(root, new, dry)
        git(root, "mv", old, new)
        dst.write_text(follow_depth(absolute_imports(dst.read_text(), old), old, new))
    return done


def remove_empty_packages(root: Path, dry: bool) -> None:
    for init in sorted((root / "tests").rglob("__init__.py"), reverse=True):
        folder = init.parent
        rest = [p for p in folder.iterdir() if p.name not in {"__init__.py", "__pycache__"}]
        if folder != root / "tests" and not rest:
            print(f"remove empty: {folder.relative_to(root)}")
            if not dry:
                git(root, "rm", "-q", str(init))


def sort_imports(root: Path, paths: list[str]) -> None:
    """Absolute ``tests.*`` imports sort elsewhere than the relative ones they replace."""
    ruff = root / ".venv" / "bin" / "ruff"
    files = [str(root / p) for p in paths if p.endswith(".py") and (root / p).exists()]
    if files:
        subprocess.run([str(ruff) if ruff.exists() else "ruff", "check", "-q", "--fix",
                        "--select", "I", *files], check=False)


def rewrite_references(root: Path, dry: bool) -> list[str]:
    pairs = []
    for old, new in MOVES.items():
        pairs.append((re.compile(re.escape(old) + r"(?![\w/])"), new))
        pairs.append((re.compile(r"(?<![\w.])" + re.escape(module(old)) + r"(?![\w])"),
                      module(new)))
    # `test_x.py::name` in prose: the file's bare name, when no other moved file has it
    bare = [Path(old).name for old in MOVES]
    for old, new in MOVES.items():
        if bare.count(Path(old).name) == 1:
            pairs.append((re.compile(r"(?<=`)" + re.escape(Path(old).name) + r"(?=[`:])"), new))
    me = Path(__file__).resolve()
    changed = []
    for name in git(root, "ls-files").splitlines():
        path = root / name
        if not TEXT.search(name) or not path.is_file() or path.resolve() == me:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        new = text
        for pattern, replacement in pairs:
            new = pattern.sub(replacement, new)
        if new != text:
            print(f"references: {name}")
            changed.append(name)
            if not dry:
                path.write_text(new)
    return changed


def unplaced(root: Path, names: bool = False) -> list[str]:
    """Test files that are not found by a module's path nor in a cross-module suite
    (with ``names``: also those in a package's folder named for a topic, not a module)."""
    src = root / "src" / "ecluse"
    out = []
    for path in sorted((root / "tests").rglob("*.py")):
        rel = path.relative_to(root / "tests")
        if rel.parts[0] in CROSS or path.name in HELPERS:
            continue
        package = src.joinpath(*rel.parts[:-1])
        if not package.is_dir():
            out.append(f"{rel}: tests/{'/'.join(rel.parts[:-1])} mirrors no package of src/ecluse")
            continue
        if not names:
            continue
        stem = path.stem.removeprefix("test_")
        names = {p.stem for p in package.glob("*.py")} | {p.name for p in package.iterdir()
                                                           if p.is_dir()}
        names |= {n.strip("_") for n in names}
        if not any(stem == n or stem.startswith(n + "_") for n in names):
            out.append(f"{rel}: named for no module of src/ecluse/{'/'.join(rel.parts[:-1])}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--dry-run", action="store_true", help="say what would change")
    ap.add_argument("--names", action="store_true",
                    help="also list files in a package's folder named for no module")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    moved = move(root, args.dry_run)
    if not args.dry_run:
        remove_empty_packages(root, args.dry_run)
    referencing = rewrite_references(root, args.dry_run)
    if not args.dry_run:
        sort_imports(root, [*moved.values(), *referencing])
    for line in unplaced(root, args.names):
        print(f"not placed: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
