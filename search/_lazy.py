"""Package attributes imported on first use (PEP 562), so that importing a light module loads no heavy one.

`search.results.predict` with an ONNX bundle must run where torch is not installed; the package's
convenience exports (backbones, trainers) would import torch the moment any `search` module is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that imports `exports[name]` (a module path) when `name` is first read."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
