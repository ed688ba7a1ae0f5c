"""The parts of `bench/device_check.py`: each returns a JSON-ready dict.

Settings the check chooses (batch, crop, step counts, input workers) are overrides of the
shipped configs, stated here so the JSON's figures can be reproduced with the same overrides.
"""

import dataclasses
import os
import statistics
import tempfile
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import advseg_jax.data  # noqa: F401  (registers our TFDS builders)
from advseg_jax import benchmark as benchmark_lib
from advseg_jax import checkpointing
from advseg_jax import config_checks
from advseg_jax import grain_pipeline
from advseg_jax import memory_fit
from advseg_jax import peak_flops
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train as train_lib
from advseg_jax import train_step as steps
from advseg_jax.configs import default
from advseg_jax.configs import stanford_background
from advseg_jax.configs import voc


@dataclasses.dataclass
class Settings:
    smoke: bool
    out: str
    manual_dir: Optional[str]
    train_steps: int

    data_dir: str


def _tiny(settings: Settings) -> ml_collections.ConfigDict:
    """digit_scenes' small net: the checks test code paths, not a model's figures."""
    config = default.get_config()
    config.data_dir = settings.data_dir
    config.batch_size = 8
    config.input.crop_size = (32, 32)
    config.segmentor.width = 8
    config.adversary.width_divisor = 8
    config.lambda_adv, config.lambda_adv_warmup_steps = 0.5, 0
    config.compilation_cache_dir = ""
    return config


def _stanford(settings: Settings) -> ml_collections.ConfigDict:
    config = stanford_background.get_config()
    config.data_dir, config.manual_dir = settings.data_dir, settings.manual_dir or ""
    config.compilation_cache_dir = ""
    if settings.smoke:  # The paper's model and crop, shrunk to seconds on a CPU; eval_size
        # from the data (Stanford's 320x320, digit_scenes' 48x48 without --manual_dir).
        config.input.crop_size, config.input.eval_size = (48, 64), (0, 0)
        config.segmentor.widths = (4, 8, 16)
        config.adversary.width_divisor = 16
    return config


def prepare_data(settings: Settings) -> dict:
    """Stanford fold 0 (digit_scenes without --manual_dir) as array_record under --out."""
    config = _stanford(settings) if settings.manual_dir else _tiny(settings)
    start = time.perf_counter()
    builder = grain_pipeline.get_builder(config)
    return {"dataset": config.dataset, "data_dir": config.data_dir,
            "prepare_s": time.perf_counter() - start,
            "splits": {name: split.num_examples for name, split in builder.info.splits.items()}}


_INITIAL = {}


def _initial_state(config: ml_collections.ConfigDict, mesh):
    """The checks' one initial state (its init compiles slowly on CPU): float32 parameters
    whatever `config.dtype`, so the bfloat16 check starts from it too. Callers copy it."""
    if "state" not in _INITIAL:
        _INITIAL["state"] = state_lib.create_train_state(config, mesh)
    return _INITIAL["state"]


def _sgd_one(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Plain SGD at rate 1: an update is minus the gradient, so updates compare gradients."""
    for part in (config.segmentor, config.adversary):
        part.optimizer, part.learning_rate, part.momentum = "sgd", 1.0, 0.0
        part.schedule, part.warmup_steps, part.weight_decay = "constant", 0, 0.0
    return config


def _one_step(config: ml_collections.ConfigDict, initial, batch):
    """(updates of both models, metrics) of one train step from `initial` (left intact)."""
    mesh = sharding.make_mesh()
    segmentor, adversary = state_lib.build_models(config)
    state = jax.tree.map(jnp.copy, initial)  # The step donates the state it is given.
    before = jax.device_get(state)
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    state, metrics = step(state, batch)
    after = jax.device_get(state)
    updates = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
                           after.segmentor.params, before.segmentor.params)
    adversary_updates = jax.tree.map(
        lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
        after.adversary.params, before.adversary.params)
    return (updates, adversary_updates), {k: float(v) for k, v in jax.device_get(metrics).items()}


def _relative_error(got, want) -> float:
    worst = 0.0
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)))
    return worst


def check_accumulation(settings: Settings, tolerance: float) -> dict:
    """The adversarial step with K = 2 and 4 microbatches, as a scan and unrolled, against
    K = 1: both models' updates and the metrics, relative error below `tolerance`."""
    config = _sgd_one(_tiny(settings))
    config_checks.validate_config(config)
    rows = config.batch_size // jax.device_count()
    mesh = sharding.make_mesh()
    initial = _initial_state(config, mesh)
    batch = benchmark_lib._synthetic_batch(config, mesh)
    errors = {}
    with jax.default_matmul_precision("highest"):
        config.microbatch_size = rows
        want_updates, want_metrics = _one_step(config, initial, batch)
        for loop in ("scan", "unrolled"):
            for k in (2,) if settings.smoke else (2, 4):
                config.accumulation_loop, config.microbatch_size = loop, rows // k
                updates, metrics = _one_step(config, initial, batch)
                errors[f"{loop}_k{k}"] = max(_relative_error(updates, want_updates), max(
                    abs(metrics[key] - value) / max(abs(value), 1e-7)
                    for key, value in want_metrics.items()))
    return {"passed": all(e < tolerance for e in errors.values()), "tolerance": tolerance,
            "max_relative_error": errors, "rows_per_device": rows,
            "matmul_precision": "highest"}


def check_bfloat16(settings: Settings) -> dict:
    """Three adversarial bfloat16 steps: finite losses, float32 parameters and optimizer
    states (bfloat16 is the activations' dtype only)."""
    config = _tiny(settings)
    config.dtype = "bfloat16"
    config_checks.validate_config(config)
    mesh = sharding.make_mesh()
    segmentor, adversary = state_lib.build_models(config)
    state = jax.tree.map(jnp.copy, _initial_state(config, mesh))  # Donated by the step.
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    batch = benchmark_lib._synthetic_batch(config, mesh)
    losses = []
    for _ in range(3):
        state, metrics = step(state, batch)
        metrics = jax.device_get(metrics)
        losses.append({k: float(metrics[k]) for k in ("segmentor_loss", "adversary_loss")})
    dtypes = {str(leaf.dtype) for leaf in jax.tree.leaves(state)
              if jnp.issubdtype(leaf.dtype, jnp.floating)}
    finite = all(np.isfinite(v) for record in losses for v in record.values())
    return {"passed": finite and dtypes == {"float32"}, "losses": losses,
            "state_float_dtypes": sorted(dtypes)}


def check_memory_limit() -> dict:
    """The limit `memory_fit` takes when none is configured: the device's own `bytes_limit`
    on an accelerator (the host's available memory on CPU)."""
    config = default.get_config()
    config.memory_limit_gb = 0.0
    limit, source = memory_fit.memory_limit(config)
    device = jax.local_devices()[0]
    expected = "host MemAvailable" if device.platform == "cpu" else "bytes_limit"
    return {"passed": limit is not None and expected in source,
            "memory_limit_gb": None if limit is None else limit / 1e9, "source": source,
            "memory_stats_keys": sorted((device.memory_stats() or {}).keys())}


def check_restore(settings: Settings) -> dict:
    """A state saved asynchronously, then restored into a state holding other values: equal."""
    config = _tiny(settings)
    mesh = sharding.make_mesh()
    state = _initial_state(config, mesh)
    saved = jax.device_get(state)
    # A state of the same structure and shardings holding other values (no second init).
    other = jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.number) else x, state)
    with tempfile.TemporaryDirectory() as workdir:
        checkpoints = checkpointing.manager(workdir, config)
        start = time.perf_counter()
        checkpointing.save(checkpoints, 1, state)
        save_call_s = time.perf_counter() - start  # Returns before the write is done.
        checkpoints.wait_until_finished()
        save_total_s = time.perf_counter() - start
        restored = jax.device_get(checkpointing.restore(checkpoints, other, 1))
        checkpoints.close()
    equal = all(np.array_equal(a, b) for a, b in
                zip(jax.tree.leaves(restored), jax.tree.leaves(saved)))
    changed = any(not np.array_equal(a, b) for a, b in
                  zip(jax.tree.leaves(jax.device_get(other)), jax.tree.leaves(saved)))
    return {"passed": equal and changed, "save_call_s": save_call_s, "save_total_s": save_total_s,
            "restored_equals_saved": equal, "fresh_state_differed": changed}


def _benchmark_config(settings: Settings, name: str) -> ml_collections.ConfigDict:
    if name.startswith("stanford"):
        config = _stanford(settings)
    else:
        config = voc.get_config()
        config.compilation_cache_dir = ""
        if settings.smoke:  # Dilated-8 (138M parameters) takes minutes to compile on CPU.
            config.input.crop_size = (64, 64)
            config.segmentor.name, config.segmentor.width = "digit_net", 8
            config.segmentor.pretrained = ""
    config.batch_size = 2 if settings.smoke else 16
    config.dtype = name.rsplit("_", 1)[1]
    return config


def benchmark(settings: Settings, name: str) -> dict:
    """`advseg_jax.benchmark`'s figures for one (dataset, dtype) at batch 16."""
    config = _benchmark_config(settings, name)
    return benchmark_lib.run_benchmark(config, steps_timed=2 if settings.smoke else 10,
                                       warmup=1 if settings.smoke else 2,
                                       input_batches=3 if settings.smoke else 30,
                                       peak_matmul_size=512 if settings.smoke else
                                       peak_flops.MATMUL_SIZE)


def _scalars(workdir: str) -> dict:
    """{tag: [(step, wall_time, value)]} of the run's TensorBoard events."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util
    events = event_accumulator.EventAccumulator(workdir, size_guidance={"tensors": 0})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["tensors"]:
        values = [(e.step, e.wall_time, tensor_util.make_ndarray(e.tensor_proto))
                  for e in events.Tensors(tag)]
        if values and all(np.ndim(v) == 0 and np.issubdtype(v.dtype, np.number)
                          for _, _, v in values):  # Not image strips or hparams.
            scalars[tag] = [(step, wall, float(v)) for step, wall, v in values]
    return scalars


def train(settings: Settings) -> dict:
    """A short paper-scale Stanford adversarial run (digit_scenes without --manual_dir)."""
    config = _stanford(settings) if settings.manual_dir else _tiny(settings)
    steps_total = 4 if settings.smoke else settings.train_steps
    config.num_train_steps = config.eval_every_steps = steps_total
    config.checkpoint_every_steps = steps_total
    config.log_every_steps = 2 if settings.smoke else 100
    config.num_train_eval_examples = 0
    config.input.cache_decoded = True
    config.input.num_workers = 0 if settings.smoke else max(1, min(8, os.cpu_count() - 4))
    workdir = tempfile.mkdtemp(prefix="device_check_train_")
    start_wall = time.time()
    start = time.perf_counter()
    first_error = None
    try:
        record = train_lib.train_and_evaluate(config, workdir)
    except Exception as error:  # noqa: BLE001  Worker processes failing: once more without.
        if not config.input.num_workers:
            raise
        first_error = f"num_workers={config.input.num_workers}: {type(error).__name__}: {error}"
        config.input.num_workers = 0
        workdir = tempfile.mkdtemp(prefix="device_check_train_")
        start_wall, start = time.time(), time.perf_counter()
        record = train_lib.train_and_evaluate(config, workdir)
    wall = time.perf_counter() - start
    scalars = _scalars(workdir)
    rates = [v for _, _, v in scalars.get("steps_per_sec", [])]
    waits = [v for _, _, v in scalars.get("train/input_wait_fraction", [])]
    first_log = scalars.get("train/segmentor_loss", [(None, None, None)])[0]
    later_rates = rates[1:] or rates
    return {"dataset": config.dataset, "num_train_steps": steps_total,
            "batch_size": config.batch_size, "crop_size": list(config.input.crop_size),
            "dtype": config.dtype, "lambda_adv": config.lambda_adv,
            "input_num_workers": config.input.num_workers, "wall_s": wall,
            "error_with_workers": first_error,
            "steps_per_s": statistics.median(later_rates) if later_rates else None,
            "steps_per_s_by_interval": rates,
            "input_wait_fraction": statistics.median(waits[1:] or waits) if waits else None,
            "input_wait_fraction_by_interval": waits,
            "first_log_step": first_log[0],
            "seconds_to_first_log": None if first_log[1] is None else first_log[1] - start_wall,
            "final_segmentor_loss": first_log[2] if first_log[2] is None else
            scalars["train/segmentor_loss"][-1][2],
            "evaluation": {k: v for k, v in (record or {}).items()
                           if not isinstance(v, (list, dict))}}
