"""Runs a CLI's `main` under absl the same way as `python -m advseg_jax.X` or a console script.

absl's `--help` prints the `__main__` module's docstring and the flags that module defined. For
a console script, `__main__` is pip's generated wrapper, which has neither, so `--help` would
print a bare "USAGE: advseg-train [flags]". Here the CLI module's docstring and flags are
adopted as the program's own, `--config=NAME` is resolved to a shipped config, and a help
request exits 0 (absl exits 1), so `advseg-train --help && ...` behaves as users expect.
"""

import sys
from typing import Callable, Sequence

from absl import app
from absl import flags

from advseg_jax import configs

_HELP_FLAGS = ("-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def hide_accelerators_from_tensorflow() -> None:
    """Keeps an already imported TensorFlow (tf.data, TFDS) off the GPUs JAX uses.

    TensorFlow is never imported for this: where it is absent (JAX accelerator images) or
    not loaded, nothing of it can claim a device. Call it before anything runs on TensorFlow.
    """
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None:
        tensorflow.config.set_visible_devices([], "GPU")


def run(main: Callable[[Sequence[str]], None], module_name: str) -> None:
    """`app.run(main)` for the CLI module `module_name` (pass the module's `__name__`)."""
    if module_name != "__main__":  # A console script: adopt the module's help and flags.
        module = sys.modules[module_name]
        sys.modules["__main__"].__doc__ = module.__doc__
        for flag in flags.FLAGS.get_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    help_requested = any(arg in _HELP_FLAGS for arg in sys.argv[1:])
    try:
        app.run(main, argv=configs.resolve_argv(sys.argv))
    except SystemExit as exit_:
        if help_requested and exit_.code == 1:
            raise SystemExit(0) from None
        raise
