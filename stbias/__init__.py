"""stbias: static and dynamic information in video networks.

``from stbias import Probe, WeightTemporality`` gives the Python API (see ``stbias.api``); the
command line is ``stbias`` / ``python run.py``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Probe", "ProbeResults", "WeightTemporality", "__version__"]


def __getattr__(name: str) -> Any:
    # the API pulls in torch and Lightning: import it when asked for, not with the package
    if name in ("Probe", "ProbeResults", "WeightTemporality"):
        from stbias import api

        return getattr(api, name)
    raise AttributeError(f"module 'stbias' has no attribute {name!r}")
