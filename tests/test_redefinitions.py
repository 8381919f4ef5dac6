"""No name is defined twice in one scope (pylint's ``function-redefined``, E0102, and more).

Python silently keeps the last of two definitions of a name, so a stale copy can shadow the code
that is read and tested (this happened to ``exactps sample``). Counted per scope (a module, a class
or a function body): a ``def``/``class`` that repeats an earlier ``def``/``class`` or assignment, an
assignment to a name already bound by ``def``/``class``, and a second assignment of a module- or
class-level constant (``UPPER_CASE``). ``@overload``, property setters and ``if``/``try`` branches
are not counted.

Also a script: ``python3 tests/test_redefinitions.py [PATH ...]`` (default ``src tests``) prints
every redefinition and exits 1 if there is any (``.ci/run`` runs it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_DECORATORS_THAT_REDEFINE = {"overload", "setter", "getter", "deleter", "register"}


def _redefines(node: ast.AST) -> bool:
    for d in getattr(node, "decorator_list", []):
        name = d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "")
        if name in _DECORATORS_THAT_REDEFINE:
            return True
    return False


def _scopes(tree: ast.AST):
    yield tree
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def redefinitions(source: str, filename: str = "<string>") -> list[str]:
    """``file:line: 'name' redefines line N`` for every redefinition in ``source``."""
    tree = ast.parse(source, filename=filename)
    found = []
    for scope in _scopes(tree):
        defined: dict[str, int] = {}  # by def / class
        assigned: dict[str, int] = {}
        for stmt in getattr(scope, "body", []):
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if _redefines(stmt):
                    continue
                earlier = defined.get(stmt.name, assigned.get(stmt.name))
                if earlier is not None:
                    found.append(f"{filename}:{stmt.lineno}: '{stmt.name}' redefines line {earlier}")
                defined[stmt.name] = stmt.lineno
            elif isinstance(stmt, ast.Assign | ast.AnnAssign):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for t in targets:
                    if not isinstance(t, ast.Name):
                        continue
                    constant = t.id.lstrip("_").isupper() and not isinstance(scope, ast.FunctionDef)
                    earlier = defined.get(t.id, assigned.get(t.id) if constant else None)
                    if earlier is not None:
                        found.append(f"{filename}:{stmt.lineno}: '{t.id}' redefines line {earlier}")
                    assigned[t.id] = stmt.lineno
    return found


def check(paths: list[Path]) -> list[str]:
    found = []
    for root in paths:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found += redefinitions(path.read_text(encoding="utf-8"), str(name))
    return found


def test_no_redefinitions_in_the_project():
    assert check([ROOT / "src", ROOT / "tests"]) == []


def test_the_check_finds_what_pylint_e0102_finds_and_more():
    source = '''
def f():
    return 1

def f():
    return 2

class C:
    def m(self):
        pass

    def m(self):
        pass

    @property
    def p(self):
        return 1

    @p.setter
    def p(self, v):
        pass

HELP = "a"
HELP = "b"
x = 1
x = x + 1
'''
    found = redefinitions(source)
    want = ["'f' redefines line 2", "'m' redefines line 9", "'HELP' redefines line 23"]
    assert sorted(f.split(": ")[1] for f in found) == sorted(want)


if __name__ == "__main__":
    problems = check([Path(p).resolve() for p in (sys.argv[1:] or [ROOT / "src", ROOT / "tests"])])
    print("\n".join(problems) or "no redefinitions")
    raise SystemExit(1 if problems else 0)
