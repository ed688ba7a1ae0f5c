"""The shipped training configs, usable by name (`--config=voc`) from an installed package.

Each module here has `get_config()`; variants import `advseg_jax.configs.default` and override
fields. They live inside the package (not in a top-level `configs/`) so that the wheel carries
them and their imports resolve the same way in a checkout and in site-packages; the
repository's `configs/*.py` are one-line shims kept so that `--config=configs/voc.py` works too.

`ml_collections`' config flag only takes a file path, so every CLI passes its argv through
`resolve_argv`, which turns a bare name into the shipped file's path before absl parses it.
"""

import os
from typing import List, Sequence

_DIRECTORY = os.path.dirname(os.path.abspath(__file__))
_FLAG = "--config"


def names() -> List[str]:
    """The shipped configs' names, e.g. ['default', 'stanford_background', 'voc']."""
    return sorted(file[:-3] for file in os.listdir(_DIRECTORY)
                  if file.endswith(".py") and not file.startswith("_"))


def path(name: str) -> str:
    """The file of shipped config `name` (with or without `.py`)."""
    stem = name[:-3] if name.endswith(".py") else name
    if stem not in names():
        raise ValueError(f"No shipped config named {name!r}; shipped configs: {names()}. Pass "
                         "a config file path instead, e.g. --config=path/to/my_config.py.")
    return os.path.join(_DIRECTORY, f"{stem}.py")


def resolve(value: str) -> str:
    """A `--config` value as a file path: existing files stay as given, names become paths.

    `value` may carry ml_collections' `:ARGUMENT` suffix, which is kept.
    """
    file, colon, argument = value.partition(":")
    if os.path.exists(file) or os.sep in file or "/" in file:
        return value  # A path: a missing file is reported by ml_collections, naming it.
    return path(file) + colon + argument


def resolve_argv(argv: Sequence[str]) -> List[str]:
    """`argv` with the value of `--config=NAME` / `--config NAME` resolved by `resolve`.

    Exits with a message listing the shipped configs if NAME is neither a file nor one of them.
    """
    argv = list(argv)
    for i, arg in enumerate(argv):
        try:
            if arg.startswith(_FLAG + "="):
                argv[i] = f"{_FLAG}={resolve(arg[len(_FLAG) + 1:])}"
            elif arg == _FLAG and i + 1 < len(argv):
                argv[i + 1] = resolve(argv[i + 1])
        except ValueError as error:
            raise SystemExit(f"Error: --config: {error}") from error
    return argv


def name_of(config_path: str) -> str:
    """`config_path`'s shipped name if it is a shipped config file, else `config_path` itself.

    Records (a sweep's manifest) then name the config portably, not by a site-packages path.
    """
    file, colon, argument = config_path.partition(":")
    if os.path.dirname(os.path.abspath(file)) == _DIRECTORY and file.endswith(".py"):
        return os.path.basename(file)[:-3] + colon + argument
    return config_path
