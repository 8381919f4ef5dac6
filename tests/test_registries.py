"""Task and objective names are looked up in their tables, never compared as strings elsewhere.

:data:`exactps.tasks.TASKS` and :data:`exactps.models.OBJECTIVES` are the only places that know what a
task or an objective is; every other module asks the registry entry (``task.measures``,
``objective.loss``, ...). A comparison such as ``task == "none"`` or ``objective != "conditional"``
in any other module fails this test.
"""

import ast
from pathlib import Path

from exactps.models import OBJECTIVES
from exactps.tasks import TASKS

SRC = Path(__file__).resolve().parents[1] / "src" / "exactps"
TABLES = {SRC / "tasks.py", SRC / "models.py"}
NAMES = set(TASKS) | set(OBJECTIVES)


def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_strings(e) for e in node.elts)) if node.elts else set()
    return set()


def name_comparisons(source: str, filename: str) -> list[str]:
    """``file:line: 'name'`` for each comparison of a registry name with something."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                for name in sorted(_strings(side) & NAMES):
                    found.append(f"{filename}:{node.lineno}: {name!r}")
    return found


def test_no_registry_name_is_compared_outside_its_table():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path not in TABLES:
            found += name_comparisons(path.read_text(), str(path.relative_to(SRC)))
    assert found == []


def test_the_scan_finds_comparisons():
    source = 'if task == "none" or objective in ("eps", "conditional") or x != "map":\n    pass\n'
    assert name_comparisons(source, "f.py") == ["f.py:1: 'none'", "f.py:1: 'conditional'", "f.py:1: 'eps'"]
