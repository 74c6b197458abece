"""The package's folders are layers: each module imports only its own layer and those below it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

# Lowest first. spaces/ sits beside the kinds: spaces propose configs for them, the study layer runs both.
LAYERS = {
    "search.errors": 0,
    "search.progress": 0,  # progress bars for the long steps, from any layer
    "search.allocator": 0,  # how the process keeps freed memory: set by whatever starts a study
    "search._lazy": 0,
    "search.bundle_format": 0,  # the file every model folder holds: torch-free, for ONNX bundles  # the packages' lazy exports: every layer's __init__ may use it
    "search.data": 1,
    "search.models": 2,
    "search.training": 3,
    "search.kinds": 4,
    "spaces": 4,
    "search.study": 5,
    "search.results": 6,
    "search.cli": 7,
    "search": 7,  # the package's own __init__ and __main__ re-export the public surface
}
MAX_LINES = 400


def layer_of(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted([*(ROOT / "search").rglob("*.py"), *(ROOT / "spaces").rglob("*.py")]):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in ("search", "spaces")}


def test_imports_run_one_way() -> None:
    upward = []
    for name, path in modules().items():
        for target in imported(path):
            if layer_of(target) > layer_of(name):
                upward.append(f"{name} imports {target}")
    assert not upward, "\n".join(upward)


def test_nothing_below_the_command_lines_imports_them() -> None:
    offenders = [
        f"{name} imports {target}"
        for name, path in modules().items()
        if not name.startswith("search.cli") and name not in ("search", "search.__main__")
        for target in imported(path)
        if target.startswith("search.cli")
    ]
    assert not offenders, "\n".join(offenders)


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_only_the_record_reaches_into_optuna_internals() -> None:
    private = ("._storage", "._study_id", "._trial_id", "optuna.artifacts._protocol")
    offenders = [
        name
        for name, path in modules().items()
        if name != "search.study.record" and any(p in path.read_text() for p in private)
    ]
    assert not offenders, offenders
