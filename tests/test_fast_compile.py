"""fast_compile: the suite's XLA:CPU flags reach JAX, and a caller's own value wins."""

import os

from advseg_jax import fast_compile


def test_the_suite_compiles_with_every_fast_flag():
    flags = os.environ["XLA_FLAGS"].split()  # Set by conftest before JAX was imported.
    for flag in fast_compile.FAST_COMPILE_XLA_FLAGS:
        assert flag in flags
    assert "--xla_force_host_platform_device_count=2" in flags


def test_a_value_already_set_is_kept_and_others_are_added():
    got = fast_compile.with_fast_compile("--xla_backend_optimization_level=2 --foo=1").split()
    assert got[:2] == ["--xla_backend_optimization_level=2", "--foo=1"]
    assert "--xla_backend_optimization_level=0" not in got
    assert set(fast_compile.FAST_COMPILE_XLA_FLAGS[1:]) <= set(got)
    assert fast_compile.with_fast_compile(" ".join(got)) == " ".join(got)  # Idempotent.


def test_kept_from_passes_on_only_the_fast_flags():
    flags = "--xla_force_host_platform_device_count=2 " + " ".join(
            fast_compile.FAST_COMPILE_XLA_FLAGS)
    assert fast_compile.kept_from(flags).split() == list(fast_compile.FAST_COMPILE_XLA_FLAGS)
