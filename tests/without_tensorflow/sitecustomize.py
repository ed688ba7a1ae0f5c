"""Makes `import tensorflow` (and of any submodule) fail, as where TensorFlow is not installed.

Python imports `sitecustomize` at start-up from the path, so putting this directory first on
PYTHONPATH runs a program as a JAX accelerator image would, without uninstalling anything:

    PYTHONPATH=tests/without_tensorflow python -m advseg_jax.evaluate ...

Libraries that probe for TensorFlow (`try: import tensorflow`) see it missing and take their
TensorFlow-free path, as they would there.
"""

import importlib.abc
import sys


class _RefuseTensorFlow(importlib.abc.MetaPathFinder):

    def find_spec(self, name, path=None, target=None):
        del path, target
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by "
                                      f"{__file__} to test running without TensorFlow)",
                                      name=name)
        return None


sys.meta_path.insert(0, _RefuseTensorFlow())
