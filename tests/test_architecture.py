"""The tree reads as the architecture: dependencies point one way, and there are no import cycles."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "petclf"
#: Each part may import only from the parts before it (and from itself). Evaluation judges predictions (of a saved
#: model, through runtime) and so sits below training; ``learn.judge`` brings a fastai Learner to it.
LAYERS = ("core", "data", "runtime", "serve", "evaluate", "learn", "audit", "jobs", "cli")
#: Parts that must work without fastai (at import time: the pickle path imports it on demand). `petclf report` on a
#: saved model goes through evaluate only.
NO_FASTAI = ("core", "data", "runtime", "serve", "evaluate")
#: Names that are both a package's function and a module, on purpose: ``petclf.audit`` is a callable package whose
#: call runs ``petclf.audit.audit``, so ``petclf.audit`` is the same object however it is reached; ``petclf.serve``
#: is only ever the package and ``petclf.serve.serve`` only ever its function (no top-level ``serve``).
SHARED_NAMES = {"audit", "serve"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: use absolute imports (from petclf.…), found a relative one")
    return names


def _part(module: str) -> str | None:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "petclf" and pieces[1] in LAYERS else None


def test_parts_import_only_the_parts_below_them():
    wrong = []
    for module, path in _modules().items():
        part = _part(module)
        if part is None:
            continue
        for imported in _imports(path):
            target = _part(imported)
            if target is not None and LAYERS.index(target) > LAYERS.index(part):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(sorted(set(wrong)))


@pytest.mark.parametrize("part", NO_FASTAI)
def test_data_and_runtime_do_not_import_fastai(part):
    offenders = [f"{module} imports {name}" for module, path in _modules().items() if _part(module) == part
                 for name in _imports(path, top_level_only=True) if name.split(".")[0] in ("fastai", "fastcore")]
    assert not offenders, "\n".join(offenders)


def _public_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            try:
                return set(ast.literal_eval(node.value))
            except ValueError:  # __all__ = sorted(_EXPORTS): the table's keys
                pass
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets):
            return {key.value for key in node.value.keys}
    return set()


def test_no_public_name_is_also_a_module():
    """``from petclf.evaluate import interpret`` gave a module while ``from petclf import interpret`` gave a function:
    a name a package exports is never the name of a module, there or anywhere in petclf."""
    module_names = {name.rsplit(".", 1)[-1] for name in _modules()}
    clashes = [f"{module} exports {name!r}, also a module name" for module, path in _modules().items()
               if path.name == "__init__.py" for name in _public_names(path) & module_names - SHARED_NAMES]
    assert not clashes, "\n".join(clashes)


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {m: {i for i in _imports(p) if i in modules and i != m and not m.startswith(i + ".")}
             for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_every_package_lists_its_public_names():
    for module, path in _modules().items():
        if path.name == "__init__.py" and module != "petclf":
            tree = ast.parse(path.read_text())
            assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
                       for n in tree.body), f"{module} has no __all__"


def test_only_the_command_line_imports_the_audit():
    """The audit sits on top of the library: nothing else depends on it (petclf.audit(...) is reached lazily)."""
    offenders = [f"{module} imports {name}" for module, path in _modules().items()
                 if module not in ("petclf", "petclf.cli") and _part(module) != "audit"
                 for name in _imports(path) if _part(name) == "audit"]
    assert not offenders, "\n".join(offenders)


def _type_checking_imports(path: Path) -> dict[str, str]:
    """Name → module of the imports under ``if TYPE_CHECKING:`` at the top of ``path``."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                if isinstance(imp, ast.ImportFrom):
                    found |= {alias.asname or alias.name: f"{imp.module}.{alias.name}" if imp.module == "petclf"
                              else imp.module for alias in imp.names}
    return found


def test_type_checkers_see_the_same_names_the_package_exports():
    """The TYPE_CHECKING block (for IDEs) and the lazy table (at run time) cannot drift apart."""
    init = PACKAGE / "__init__.py"
    table = next(ast.literal_eval(node.value) for node in ast.parse(init.read_text()).body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_EXPORTS")
    assert _type_checking_imports(init) == table | {"audit": "petclf.audit"}


def test_no_module_defines_a_name_that_is_also_a_module_beside_it():
    """``learn.distributed.distributed`` and ``serve.simple.metrics`` read like ``learn.distributed`` and
    ``serve.metrics``: within a package, a function, class or constant is never named like a module of it."""
    clashes = []
    for package in [PACKAGE, *(p.parent for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)]:
        siblings = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
        siblings |= {d.name for d in package.iterdir() if (d / "__init__.py").is_file()}
        for path in package.glob("*.py"):
            tree = ast.parse(path.read_text())
            kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            defined = {n.name for n in tree.body if isinstance(n, kinds)}
            defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                        if isinstance(t, ast.Name)}
            clashes += [f"{path.relative_to(PACKAGE.parent)} defines {name!r}, also a module of its package"
                        for name in sorted(defined & siblings - SHARED_NAMES)]
    assert not clashes, "\n".join(clashes)


#: A module longer than this says why in its docstring, with these words.
MAX_LINES, LONG_REASON = 400, "Long on purpose:"


def test_no_module_is_long_without_saying_why():
    long = [f"{path.relative_to(PACKAGE.parent)}: {n} lines" for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES
            and LONG_REASON not in (ast.get_docstring(ast.parse(path.read_text())) or "")]
    assert not long, f"over {MAX_LINES} lines without {LONG_REASON!r} in the docstring:\n" + "\n".join(long)
