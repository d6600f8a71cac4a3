"""The core stays the core: no module of ``mmcore/`` imports the built-in plugins or the kernels by name
(it finds plugins through entry points and hooks, like any other), and no two of its modules import
each other (an import circle makes the order of imports matter and hides a missing layer)."""

from __future__ import annotations

import ast
from pathlib import Path

import mmcore

CORE = Path(mmcore.__file__).resolve().parent
FORBIDDEN = ("mmcore_plugins", "mmcore_kernels")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for file in sorted(CORE.rglob("*.py")):
        parts = file.relative_to(CORE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    return out


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Every module an import statement names, at any depth (function-level imports count too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_no_core_module_imports_the_plugins_or_the_kernels():
    modules = _modules()
    assert "mmcore.cli" in modules and "mmcore.engine.trainer" in modules  # the scan sees the package
    offenders = [f"{name}:{line} imports {target}" for name, tree in modules.items() for line, target in _imports(tree)
                 if target.split(".")[0] in FORBIDDEN]
    assert not offenders, "\n".join(offenders)
    # importlib / __import__ with a literal plugin package name is the same thing in disguise
    strings = [f"{name}: {node.value!r}" for name, tree in modules.items() for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FORBIDDEN]
    assert not strings, strings


def test_no_two_core_modules_import_each_other():
    modules = _modules()
    edges = {name: {target for _, target in _imports(tree) if target in modules and target != name}
             for name, tree in modules.items()}
    # `from mmcore import x` names the package: a package importing its own submodules is no circle.
    circles = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets
                      if a in edges.get(b, ()) and b not in ("mmcore", "mmcore.engine") and a not in ("mmcore", "mmcore.engine")})
    assert not circles, f"import circles: {circles}"
