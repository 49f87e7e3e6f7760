"""dnntrick: an experiment runner for the tricks that make deep networks train.

The Python API (dnntrick/api.py) is imported on first use, so `import dnntrick` (and the CLI's
start-up) stays free of torch: train, load_run, compare, diagnose, Run, Spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "Spec", "compare", "diagnose", "load_run", "train", "tune"]

if TYPE_CHECKING:
    from dnntrick.api import Run, compare, diagnose, load_run, train
    from dnntrick.spec.schema import Spec
    from dnntrick.tuning.api import tune


def __getattr__(name: str) -> Any:
    if name == "Spec":
        from dnntrick.spec.schema import Spec

        return Spec
    if name == "tune":
        from dnntrick.tuning.api import tune

        return tune
    if name in __all__:
        from dnntrick import api

        return getattr(api, name)
    raise AttributeError(f"module 'dnntrick' has no attribute {name!r}")
