"""Prints constraints.txt: the installed version of every direct dependency in requirements.txt.

    python .ci/freeze_constraints.py > constraints.txt

Run it in the environment the test suite just passed in. jaxlib is added because its version
must match jax's. Requirements with an environment marker that does not hold here (tensorflow
on non-x86 machines) were not installed, hence not tested, and are left unconstrained.
"""

import datetime
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
_EXTRA = ("jaxlib",)


def requirement_names(text: str) -> list:
    """Distribution names of a requirements file, in order (markers evaluated)."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, marker = line.partition(";")
        if marker and not _marker_holds(marker):
            continue
        names.append(re.split(r"[<>=!~\[\s]", name.strip(), maxsplit=1)[0])
    return names


def _marker_holds(marker: str) -> bool:
    match = re.fullmatch(r'\s*platform_machine\s*(==|!=)\s*"([^"]+)"\s*', marker)
    if not match:
        raise ValueError(f"Unsupported environment marker {marker!r} in {REQUIREMENTS}.")
    equal = platform.machine() == match.group(2)
    return equal if match.group(1) == "==" else not equal


def main() -> None:
    print(f"# Versions the test suite passed with (Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}, {datetime.date.today()}).")
    print("# Reproducible install: pip install -r requirements.txt -c constraints.txt")
    print("# Refresh after changing dependencies: "
          "python .ci/freeze_constraints.py > constraints.txt")
    for name in [*requirement_names(REQUIREMENTS.read_text()), *_EXTRA]:
        try:
            print(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            sys.exit(f"{name} (from {REQUIREMENTS}) is not installed; pip install -r "
                     f"{REQUIREMENTS.name} first.")


if __name__ == "__main__":
    main()
