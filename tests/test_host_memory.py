"""host_memory.retain_freed_memory: buffers of growing size stop costing fresh pages."""

import platform
import subprocess
import sys

import pytest

_FAULTS = """
import resource, numpy as np
from advseg_jax.data import host_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(50):  # Growing sizes: glibc's own dynamic threshold never catches up.
        buffer = np.ones((1 << 20) + i * 40960, np.uint8)
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults(), host_memory.retain_freed_memory(), faults(), host_memory.retain_freed_memory())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="tunes glibc's malloc only")
def test_freed_buffers_are_reused_instead_of_faulting_fresh_pages():
    done = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                          check=True)
    default_faults, applied, tuned_faults, again = done.stdout.split()
    assert applied == "True" and again == "True"
    # 50 buffers of 1–3 MiB: ~25,000 page faults when each is a fresh mmap; after tuning, the
    # heap grows once (~750 pages) and is reused.
    assert int(default_faults) > 10_000
    assert int(tuned_faults) < int(default_faults) / 10
