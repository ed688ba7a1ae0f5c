"""config.compilation_cache_dir turns the persistent compilation cache on (there) and off."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Configures the cache as main does, then compiles one small program (the size threshold
# lowered so that it is written).
_COMPILE = """
import sys
import jax, jax.numpy as jnp
from advseg_jax import compilation_cache
compilation_cache.MIN_COMPILE_TIME_S = 0.0
print("IN_USE", compilation_cache.configure(sys.argv[1]))
print("MIN_TIME", jax.config.jax_persistent_cache_min_compile_time_secs)
jax.jit(lambda x: jnp.sin(x) * 3 + 1)(jnp.arange(7.0)).block_until_ready()
"""


def _files_under(directory) -> list:
    return [name for _, _, names in os.walk(directory) for name in names]


def _compile_with(directory_key: str, home, environment_dir=None, min_time_env=None) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    env.update(HOME=str(home), PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    if environment_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(environment_dir)
    if min_time_env is not None:
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = min_time_env
    done = subprocess.run([sys.executable, "-c", _COMPILE, directory_key], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_key_turns_the_cache_on_in_its_directory(tmp_path):
    out = _compile_with("~/xla_cache", home=tmp_path)
    assert f"IN_USE {tmp_path / 'xla_cache'}" in out  # "~" is the user's home.
    assert "MIN_TIME 0.0" in out
    assert _files_under(tmp_path / "xla_cache")


@pytest.mark.parametrize("environment", [False, True])
def test_an_empty_key_turns_the_cache_off(tmp_path, environment):
    environment_dir = tmp_path / "from_environment" if environment else None
    out = _compile_with("", home=tmp_path, environment_dir=environment_dir)
    assert "IN_USE None" in out
    assert not _files_under(tmp_path)


def test_the_environment_variable_takes_precedence(tmp_path):
    out = _compile_with("~/xla_cache", home=tmp_path, environment_dir=tmp_path / "shared")
    assert f"IN_USE {tmp_path / 'shared'}" in out
    assert _files_under(tmp_path / "shared") and not (tmp_path / "xla_cache").exists()


def test_the_environment_s_compile_time_threshold_is_kept(tmp_path):
    """tests/main_runs.py caches even quick compilations through the environment."""
    out = _compile_with("~/xla_cache", home=tmp_path, min_time_env="7")
    assert "MIN_TIME 7.0" in out
    assert not _files_under(tmp_path / "xla_cache")  # Nothing here compiles for 7 s.
