"""WORLD analysis and synthesis (pyworld), and the features the unit vocoder predicts."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def load_pyworld() -> ModuleType:
    """Import pyworld's compiled module.

    pyworld 0.3.x's ``__init__`` reads its version through ``pkg_resources``, which setuptools >= 81 no longer
    ships; the compiled extension itself needs nothing of it, so when the package import fails on exactly
    that, the extension is loaded from its file."""
    if "pyworld" in sys.modules and hasattr(sys.modules["pyworld"], "synthesize"):
        return sys.modules["pyworld"]
    try:
        return importlib.import_module("pyworld")
    except ModuleNotFoundError as e:
        if e.name != "pkg_resources":
            raise ModuleNotFoundError("pyworld is not installed: run `bash install.sh` (or pip install pyworld)") from e
    spec = importlib.util.find_spec("pyworld")
    folder = list(spec.submodule_search_locations or [])[0]
    import glob

    so = sorted(glob.glob(f"{folder}/pyworld*.so") + glob.glob(f"{folder}/pyworld*.pyd"))
    if not so:
        raise ModuleNotFoundError(f"pyworld's compiled module not found in {folder}")
    ext_spec = importlib.util.spec_from_file_location("pyworld", so[0])
    module = importlib.util.module_from_spec(ext_spec)
    ext_spec.loader.exec_module(module)
    sys.modules["pyworld"] = module
    return module
