"""Run ``python -m central ARGS`` (or ``--import MODULE ...``) as if the node extra
(jax, optax, h5py) were not installed: a meta-path finder refuses to import them, so
anything that needs them fails here as it would in ``pip install cyxwiz``."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util  # noqa: F401
import runpy
import sys

BLOCKED = {"jax", "jaxlib", "optax", "h5py"}


class NoNodeExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (the node extra is not installed)", name=name)
        return None


sys.meta_path.insert(0, NoNodeExtra())

if sys.argv[1:2] == ["--import"]:
    for module in sys.argv[2:]:
        importlib.import_module(module)
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print("loaded:", loaded)
else:
    sys.argv = ["cyxwiz", *sys.argv[1:]]
    runpy.run_module("central", run_name="__main__")
