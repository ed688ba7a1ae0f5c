"""Runs a CLI's `main` under absl the same way as `python -m advseg_jax.X` or a console script.

absl's `--help` prints the `__main__` module's docstring and the flags that module defined. For
a console script, `__main__` is pip's generated wrapper, which has neither, so `--help` would
print a bare "USAGE: advseg-train [flags]". Here the CLI module's docstring and flags are
adopted as the program's own, `--config=NAME` is resolved to a shipped config, and a help
request exits 0 (absl exits 1), so `advseg-train --help && ...` behaves as users expect.
The tools that read a trained run take its own config.json when `--config` is not given.
"""

import os
import sys
from typing import Callable, List, Sequence

from absl import app
from absl import flags

from advseg_jax import configs

_HELP_FLAGS = ("-?", "--help", "--helpshort", "--helpfull", "--helpxml")
_SAVED_RUN_CONFIG = os.path.join(os.path.dirname(os.path.abspath(configs.__file__)),
                                 "_saved_run.py")


def hide_accelerators_from_tensorflow() -> None:
    """Keeps an already imported TensorFlow (tf.data, TFDS) off the GPUs JAX uses.

    TensorFlow is never imported for this: where it is absent (JAX accelerator images) or
    not loaded, nothing of it can claim a device. Call it before anything runs on TensorFlow.
    """
    tensorflow = sys.modules.get("tensorflow")
    if tensorflow is not None:
        tensorflow.config.set_visible_devices([], "GPU")


def _flag_value(argv: Sequence[str], name: str):
    """The value of `--name=VALUE` or `--name VALUE` in `argv` (the last one), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def with_workdir_config(argv: Sequence[str]) -> List[str]:
    """`argv`, plus `--config` naming `--workdir`'s config.json when `--config` is not given.

    A tool that reads a trained run then needs neither the run's config file nor its
    `--config.KEY=VALUE` flags repeated; overrides given still apply on top of the saved config.
    Exits naming the missing file when the workdir holds no config.json.
    """
    argv = list(argv)
    workdir = _flag_value(argv, "workdir")
    if (_flag_value(argv, "config") is not None or workdir is None or
            any(arg in _HELP_FLAGS for arg in argv[1:])):
        return argv  # absl reports a missing --workdir (or --config) as a required flag.
    saved = os.path.join(workdir, "config.json")
    if not os.path.isfile(saved):
        raise SystemExit(f"Error: --config not given and {saved!r} not found (a training run "
                         "writes it). Pass --workdir of a training run, or --config=FILE with "
                         "the --config.KEY=VALUE overrides the run was trained with.")
    if ":" in os.path.abspath(saved):
        raise SystemExit(f"Error: --config not given and the path {saved!r} holds ':', which "
                         "--config cannot carry. Pass --config=FILE explicitly.")
    return [argv[0], f"--config={_SAVED_RUN_CONFIG}:{os.path.abspath(saved)}", *argv[1:]]


def run(main: Callable[[Sequence[str]], None], module_name: str,
        config_from_workdir: bool = False) -> None:
    """`app.run(main)` for the CLI module `module_name` (pass the module's `__name__`).

    `config_from_workdir`: without `--config`, use `--workdir`'s config.json
    (`with_workdir_config`), for the tools that read a trained run.
    """
    if module_name != "__main__":  # A console script: adopt the module's help and flags.
        module = sys.modules[module_name]
        sys.modules["__main__"].__doc__ = module.__doc__
        for flag in flags.FLAGS.get_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    help_requested = any(arg in _HELP_FLAGS for arg in sys.argv[1:])
    try:
        argv = configs.resolve_argv(sys.argv)
        app.run(main, argv=with_workdir_config(argv) if config_from_workdir else argv)
    except SystemExit as exit_:
        if help_requested and exit_.code == 1:
            raise SystemExit(0) from None
        raise
