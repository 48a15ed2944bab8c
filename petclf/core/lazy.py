"""Package names that load their module on first use (PEP 562).

A package lists its public names once, with the module each comes from; ``import`` of the
package stays cheap, so ``petclf --help`` needs no torch and prediction needs no pandas or
fastai, however much the package as a whole offers.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose names ``exports`` maps to their modules.

    Example::

        _EXPORTS = {"Predictor": "petclf.runtime.predict"}
        __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
        __all__ = sorted(_EXPORTS)
    """

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
