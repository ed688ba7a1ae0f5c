"""Makes `import tensorflow` (and of any submodule) fail, as where TensorFlow is not installed.

Python imports `sitecustomize` at start-up from the path, so putting this directory first on
PYTHONPATH runs a program as a JAX accelerator image would, without uninstalling anything:

    PYTHONPATH=tests/without_tensorflow python -m advseg_jax.evaluate ...

The path finder is wrapped so that it finds no `tensorflow*` module: `import tensorflow`
raises ModuleNotFoundError and `importlib.util.find_spec("tensorflow")` returns None, exactly
as without the package. (A finder that raised instead would break libraries that probe with
find_spec, e.g. etils' paths inside tfds, which never fail that way where TF is absent.)
"""

import importlib.abc
import importlib.machinery
import sys


def _blocked(name: str) -> bool:
    return name == "tensorflow" or name.startswith("tensorflow.")


class _PathFinderWithoutTensorFlow(importlib.abc.MetaPathFinder):
    """The path finder, blind to TensorFlow; everything else (distributions too) delegated."""

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self._finder, attribute)


sys.meta_path[:] = [_PathFinderWithoutTensorFlow(finder)
                    if finder is importlib.machinery.PathFinder else finder
                    for finder in sys.meta_path]
for _name in [name for name in sys.modules if _blocked(name)]:
    del sys.modules[_name]
