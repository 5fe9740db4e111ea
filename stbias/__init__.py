"""stbias: static and dynamic information in video networks.

``from stbias import Probe, GradCAM, TemporalMask, WeightTemporality`` gives the Python API (see
``stbias.api``), ``stbias.models.create(name)`` a shipped model, ``stbias.results.load(folder)``
the runs; the command line is ``stbias`` / ``python run.py``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
_API = (
    "Explanation",
    "ExplanationResults",
    "GradCAM",
    "GradCAMResults",
    "Probe",
    "ProbeResults",
    "TemporalMask",
    "TemporalMaskResults",
    "WeightTemporality",
)
__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    # the API pulls in torch and Lightning: import it when asked for, not with the package
    if name in _API:
        from stbias import api

        return getattr(api, name)
    if name in ("models", "results"):
        import importlib

        return importlib.import_module(f"stbias.{name}")
    raise AttributeError(f"module 'stbias' has no attribute {name!r}")
