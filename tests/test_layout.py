"""The tests' own layout (issue 16 item 5), by reading the tree.

* tests mirror ``src/ecluse``: every test file sits in a folder that mirrors a
  package of ``src/ecluse`` or in a cross-module suite (``tools/mirror_tests.py``
  places them; its check is the one run here);
* one hub harness: no test module outside ``tests/support/hubstack.py`` makes a
  hub stack of its own by subclassing :class:`ecluse.dev.stack.Stack` (the
  stack's own tests in ``tests/dev`` subclass it to break it on purpose).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "support" / "hubstack.py"


def _mirror_tool():
    spec = importlib.util.spec_from_file_location("mirror_tests", ROOT / "tools" / "mirror_tests.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_every_test_file_mirrors_a_package_or_sits_in_a_cross_module_suite():
    assert _mirror_tool().unplaced(ROOT) == []


def test_the_mirror_check_sees_a_misplaced_test(tmp_path):
    (tmp_path / "src" / "ecluse" / "hub").mkdir(parents=True)
    (tmp_path / "tests" / "nowhere").mkdir(parents=True)
    (tmp_path / "tests" / "nowhere" / "test_x.py").write_text("")
    (tmp_path / "tests" / "hub").mkdir()
    (tmp_path / "tests" / "hub" / "test_spawner.py").write_text("")
    assert _mirror_tool().unplaced(tmp_path) == [
        "nowhere/test_x.py: tests/nowhere mirrors no package of src/ecluse"]


def _stack_subclasses(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(root)}:{node.lineno}: {node.name}"
            for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and any((b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")) == "Stack"
                    for b in node.bases)]


def test_one_hub_harness():
    own = [hit for path in sorted((ROOT / "tests").rglob("*.py"))
           if path != HARNESS and "dev" not in path.relative_to(ROOT / "tests").parts[:1]
           for hit in _stack_subclasses(path)]
    assert own == [], "hub stacks of their own (use tests.support.hubstack):\n" + "\n".join(own)
    assert _stack_subclasses(HARNESS), "the harness no longer builds on ecluse.dev.stack.Stack"


def test_the_harness_check_sees_a_stack_of_its_own(tmp_path):
    rogue = tmp_path / "test_rogue.py"
    rogue.write_text("from ecluse.dev import stack\n\nclass MyHub(stack.Stack):\n    pass\n")
    assert _stack_subclasses(rogue, tmp_path) == ["test_rogue.py:3: MyHub"]
