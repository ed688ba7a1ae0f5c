"""Python subprocesses in which `import tensorflow` raises (tests/without_tensorflow/)."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
BLOCKER_DIR = REPO / "tests" / "without_tensorflow"


def environment() -> dict:
    """This process's environment with the blocker and the repository first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(BLOCKER_DIR), str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def run_python(args: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python ARGS` with TensorFlow blocked, in the repository root; output captured."""
    return subprocess.run([sys.executable, *args], cwd=REPO, env=environment(),
                          capture_output=True, text=True, timeout=timeout, check=False)
