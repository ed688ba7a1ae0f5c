"""XLA:CPU flags that make compiling faster, for the test suite and `device_check --smoke`.

Their programs are tiny, so compiling dominates them and running does not. Each flag changes
only how XLA:CPU turns the (unchanged) HLO into machine code, never what is computed:

- `--xla_backend_optimization_level=0`: LLVM at -O0.
- `--xla_cpu_use_fusion_emitters=false`: the elemental IR emitters instead of the MLIR fusion
  emitters, which are slower to run through their pass pipeline.
- `--xla_cpu_copy_insertion_use_region_analysis=false`: copy insertion without the costlier
  region analysis.

Measured on a 2-core AMD EPYC (`tests/test_semi_supervised.py::
test_semi_step_accumulates_to_the_whole_batch`): XLA compilation 33.1 s at level 0 alone,
25.6 s with the elemental emitters; the test 59 s → 50 s. Not for training runs: the machine
code is slower.

Left out on purpose: `--xla_cpu_enable_concurrency_optimized_scheduler=false` saved another
3 s there, but it changes the buffer schedule, and so the compiled memory analysis the suite
checks (`tests/test_exact_taps.py`: fc6's gradient temporaries 12 MB with the default
scheduler, 62 MB without it). Importing this module imports nothing (it is read before JAX is).
"""

FAST_COMPILE_XLA_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_cpu_copy_insertion_use_region_analysis=false",
)


def with_fast_compile(xla_flags: str) -> str:
    """`xla_flags` plus each fast-compile flag whose name it does not already set (a value
    set by the caller wins)."""
    flags = xla_flags.split()
    names = {flag.split("=", 1)[0] for flag in flags}
    flags += [flag for flag in FAST_COMPILE_XLA_FLAGS if flag.split("=", 1)[0] not in names]
    return " ".join(flags)


def kept_from(xla_flags: str) -> str:
    """The fast-compile flags among `xla_flags` (e.g. the suite's), to pass on to a subprocess
    that sets its own device count."""
    names = {flag.split("=", 1)[0] for flag in FAST_COMPILE_XLA_FLAGS}
    return " ".join(flag for flag in xla_flags.split() if flag.split("=", 1)[0] in names)
