"""The machine a run or a benchmark ran on, in the words its records use.

Hosts of one name change CPU model from one day to the next, and a run pinned to one core is
not comparable with one that had every core, so timings are only read beside these facts.
JAX is not imported: the results scripts use this without loading it.
"""

import os
import platform
import subprocess


def cpu_model() -> str:
    """`lscpu`'s "Model name" (e.g. "AMD EPYC"), else /proc/cpuinfo's, else what `platform`
    knows; "unknown CPU" when nothing says."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: `taskset` or `ablations.py --parallel`),
    which is what its thread pools use, not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
