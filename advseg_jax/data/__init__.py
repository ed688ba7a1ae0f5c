"""TFDS builders of advseg_jax, registered with TFDS on import of this package."""

import importlib

for _module in ("digit_scenes", "voc2012_segmentation", "stanford_background",
                "segmentation_folder"):
    try:
        importlib.import_module(f"advseg_jax.data.{_module}")
    except ModuleNotFoundError as error:  # Only while a builder module is absent from the tree.
        if error.name != f"advseg_jax.data.{_module}":
            raise
