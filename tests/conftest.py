"""Test set-up: two fake CPU devices (set before jax is imported) and a tiny config.

One persistent XLA compilation cache serves the whole session, this process and the programs
it starts: many tests compile the same tiny programs, and a cache hit is the same executable,
so results are unchanged (tests/test_train.py: 156 s without it, 80 s with it).

The CPU backend compiles with `advseg_jax.fast_compile`'s flags (LLVM -O0, the elemental
emitters, copy insertion without region analysis): the tests' programs are tiny, so compiling
dominates them and running does not (the Stanford models' accumulation check: 31 s at the
default level, 15 s at 0; the semi-supervised accumulation check: 59 s → 50 s with the
elemental emitters; AMD EPYC 2 cores). The buffer schedule is XLA's default, so the memory
analyses the tests check are the ones training gets.
The HLO — what the tests check — is the same; only the machine code is less optimised. A flag
set in XLA_FLAGS beforehand keeps its value.
"""

import atexit
import os
import shutil
import tempfile

from advseg_jax import fast_compile  # Imports nothing: JAX is not loaded yet.

os.environ["XLA_FLAGS"] = fast_compile.with_fast_compile(
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Every compile is cached, however short: at level 0 most take under the 1 s default floor, and
# the programs that spawn training runs compile the same steps again in each process.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="advseg_jax_tests_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import pytest  # noqa: E402

import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")


STANFORD_MANUAL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "shared", "data", "stanford_background")


@pytest.fixture(scope="session")
def stanford_real_data_dir(tmp_path_factory):
    """The real Stanford fold 0 (../shared/data) prepared once per test process and shared by
    the real-data tests (each preparation costs ~10–25 s); skipped where the archive is absent."""
    if not os.path.exists(os.path.join(STANFORD_MANUAL_DIR, "iccv09Data.tar.gz")):
        pytest.skip(f"real Stanford Background archive not found at {STANFORD_MANUAL_DIR} "
                    "(../shared/data is only beside the repository on the project's machines)")
    from advseg_jax import prepare_data
    directory = str(tmp_path_factory.mktemp("tfds_stanford_real"))
    prepare_data.prepare("stanford_background/fold0", directory, STANFORD_MANUAL_DIR)
    return directory


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """digit_scenes built once per session (a few seconds), shared by the tests."""
    import tensorflow_datasets as tfds

    import advseg_jax.data  # noqa: F401
    directory = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("digit_scenes", data_dir=directory,
                 file_format="array_record").download_and_prepare()
    return directory


@pytest.fixture
def tiny_config(data_dir):
    """A few-second config: narrow nets, small batches, a short run."""
    from configs import default
    config = default.get_config()
    config.data_dir = data_dir
    config.batch_size = 4
    config.eval_batch_size = 64
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 2
    config.num_train_eval_examples = 16
    config.num_image_summaries = 2
    config.segmentor.width = 8
    config.segmentor.warmup_steps = 0  # Warm-up would make step 0 a no-op (lr 0).
    config.lambda_adv_warmup_steps = 0
    config.adversary.width_divisor = 16
    config.input.shuffle_buffer = 64
    return config

