"""Keeps freed host memory in the process for reuse, so input batches stop page-faulting.

Every augmented image allocates a few buffers of about a megabyte (float32 rows, the crop, the
batch). glibc's malloc serves blocks above its mmap threshold (128 KiB at start, raised only
after such a block is freed) with fresh `mmap` pages and unmaps them on `free`: each image then
pays a page fault and a zeroing per 4 KiB page, on every buffer, every time. Measured on a
2-core AMD EPYC (Stanford image 240×320, crop 240×320): 6.7 ms of numpy augmentation per image
by default, 3.5 ms with freed blocks kept (docs/performance.md). TensorFlow's tf.data never met
this: it reuses its own buffers.

`retain_freed_memory` raises the mmap threshold to glibc's maximum (32 MiB on 64-bit) and the
trim threshold to 128 MiB, for the whole process, once. Larger blocks (a whole eval batch of
VOC) still go to `mmap`; the cost is up to 128 MiB of freed heap kept per malloc arena instead
of being returned to the system. Elsewhere than glibc (macOS, musl) it does nothing.
"""

import ctypes
import functools
import platform

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h).
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest accepted value on 64-bit hosts.
_TRIM_THRESHOLD_BYTES = 128 << 20


@functools.lru_cache(maxsize=None)
def retain_freed_memory() -> bool:
    """Tunes glibc's malloc once per process (see the module docstring). True if applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES))
