"""How fast the baseline and adversarial steps run, how close to peak, and can the input keep up.

    python -m advseg_jax.benchmark --config=configs/voc.py --config.batch_size=2 \\
        --config.input.crop_size='(64,64)' --format=json

Installed, the same flags work as the `advseg-benchmark` console script (a shipped config can
be named, e.g. `--config=voc`). `--workdir=DIR` alone benchmarks a trained run's own
DIR/config.json.

Steps run on synthetic batches of the config's crop size (so VOC needs no dataset, and
pretrained weights are skipped: values do not change timings); `input_images_per_s` reads the
real pipeline and is null, with a reason, where the dataset is not prepared in `data_dir`.
FLOPs come from XLA's cost analysis of the lowered step (`model_flops`: the compiled one
on GPU omits convolutions run by cuDNN), and MFU = FLOPs / step time / peak, the peak being
that of the run's compute dtype (`config.dtype`: float32 or bfloat16) on the same devices,
measured by `peak_flops` (in a clean child process on CPU; a compiled loop of large matmuls on
accelerators; a chip table where that fails) or given by `--peak_flops`;
`peak_flops_by_dtype` lists both dtypes' peaks; `host_load_warning` says when other work
shared the host as the benchmark started, which makes MFU unreliable. XLA counts no
work for kernel taps that only ever meet padding; a backend that computes them anyway (XLA:CPU
on a dilated fc6 over a small feature map) does more work than the MFU credits.
"""

import contextlib
import json
import os
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

import advseg_jax.data  # noqa: F401  (registers our TFDS builders)
from advseg_jax import cli
from advseg_jax import config_checks
from advseg_jax import distributed
from advseg_jax import input_pipeline
from advseg_jax import memory_fit
from advseg_jax import peak_flops as peak_lib
from advseg_jax import platforms
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from advseg_jax.data import dataset_facts
from advseg_jax.data import dataset_info
from advseg_jax.data import folder_files
from advseg_jax.data.class_info import IGNORE_LABEL

config_flags.DEFINE_config_file("config", None, "Training configuration file (default: "
                                "--workdir's config.json).", lock_config=False)
# Read only for its config.json: benchmark the configuration of a run as trained.
_WORKDIR = flags.DEFINE_string("workdir", None, "A training run whose config.json is the "
                               "config when --config is not given.")
_FORMAT = flags.DEFINE_enum("format", "json", ["json", "text"], "Output format.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed rounds (one step per variant each); median.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed rounds of steps after compilation.")
_PEAK_FLOPS = flags.DEFINE_float(
    "peak_flops", None, "Peak FLOP/s of ONE device in the config's dtype (e.g. a spec sheet's); "
    "default: measured.")
_INPUT_BATCHES = flags.DEFINE_integer("input_batches", 30, "Batches timed for the input rate.")
_PEAK_MATMUL_SIZE = flags.DEFINE_integer(
    "peak_matmul_size", peak_lib.MATMUL_SIZE, "CPU only: side of the matmuls timed for the peak "
    "(smaller: faster, and a lower peak, so a higher MFU).")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", None,
                                   "If set, a jax.profiler trace of the timed steps.")

# Datasets that build themselves offline in seconds; others must be prepared beforehand.
_SELF_BUILDING = ("digit_scenes",)


def _flops(stage) -> float:
    """FLOPs of one device's program (a jax `Lowered` or `Compiled`); older JAX returns a list
    with one dict per program."""
    analysis = stage.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis["flops"])


def measure_peak(peak_flops: Optional[float] = None, dtype: str = "float32",
                 platform: Optional[str] = None,
                 matmul_size: int = peak_lib.MATMUL_SIZE) -> Tuple[float, str]:
    """(peak FLOP/s of one device for `dtype` matmuls, where it comes from): given, or measured
    without interference (CPU: a clean child process; accelerators: a compiled loop of large
    matmuls in-process, or the chip's spec-sheet figure where that fails). `matmul_size`: the
    CPU's matmul side (smaller ones read a lower peak: for smoke runs and tests, not figures)."""
    if peak_flops is not None:
        return peak_flops, "--peak_flops (per device)"
    platform = platform or jax.devices()[0].platform
    key = (platform, dtype, matmul_size)
    if key not in _MEASURED_PEAKS:  # The hardware's: once per process (device_check: 3 runs).
        _MEASURED_PEAKS[key] = _measure_peak(dtype, platform, matmul_size)
    return _MEASURED_PEAKS[key]


_MEASURED_PEAKS: Dict[Tuple[str, str, int], Tuple[float, str]] = {}


def _measure_peak(dtype: str, platform: str, matmul_size: int) -> Tuple[float, str]:
    if platform == "cpu":
        size, repeats = matmul_size, peak_lib.REPEATS
        what = f"jit {dtype} {size}x{size} matmul on every local device at once, best of {repeats}"
        measured = peak_lib.measure_clean(size, repeats, dtype=dtype)
        return (measured["peak_flops_per_device"],
                f"measured in a clean subprocess (JAX only): {what}")
    size, chain, repeats = (peak_lib.ACCELERATOR_SIZE, peak_lib.ACCELERATOR_CHAIN,
                            peak_lib.ACCELERATOR_REPEATS)
    try:  # Accelerators admit one process only.
        measured = peak_lib.measure(size, repeats, dtype=dtype, chain=chain)
    except Exception as error:  # pylint: disable=broad-except  (any failure: use the table)
        kind = jax.devices()[0].device_kind
        table = peak_lib.chip_peak(kind, dtype)
        if table is None:
            raise RuntimeError(f"Measuring the {dtype} peak failed ({error!r}) and {kind!r} is "
                               "not in peak_flops.CHIP_PEAKS: pass --peak_flops.") from error
        return table, (f"spec-sheet table peak_flops.CHIP_PEAKS for {kind!r}: measuring failed "
                       f"({type(error).__name__})")
    return measured["peak_flops_per_device"], (
            f"measured in-process before the steps: lax.fori_loop of {chain} {dtype} "
            f"{size}x{size} matmuls per call on every local device at once, best of {repeats}")


def measure_peaks(dtype: str, peak_flops: Optional[float] = None,
                  platform: Optional[str] = None,
                  matmul_size: int = peak_lib.MATMUL_SIZE) -> Dict[str, Tuple[float, str]]:
    """{compute dtype: (per-device peak, source)} for every dtype of `peak_flops.DTYPES`;
    `peak_flops` (the flag) replaces the measurement of the run's own `dtype` only."""
    return {name: measure_peak(peak_flops if name == dtype else None, name, platform,
                               matmul_size)
            for name in peak_lib.DTYPES}


def _synthetic_batch(config: ml_collections.ConfigDict, mesh) -> dict:
    """Random uint8 images and labels (10 % void) of the crop size: this process's rows; with
    `config.unlabeled_split`, unlabeled rows too (the step of Hung et al. 2018 does twice the
    segmentor's work), all image pixels, their hidden labels as the labeled ones'."""
    rng = np.random.default_rng(0)

    def rows_of(batch_size: int):
        shape = (batch_size // jax.process_count(), *config.input.crop_size)
        labels = rng.integers(0, config.num_classes, shape, dtype=np.int32)
        labels[rng.random(shape) < 0.1] = IGNORE_LABEL
        return rng.integers(0, 256, (*shape, 3), dtype=np.uint8), labels

    images, labels = rows_of(config.batch_size)
    batch = {"image": images, "label": labels}
    if config.get("unlabeled_split"):
        images, labels = rows_of(config.unlabeled_batch_size or config.batch_size)
        batch.update(unlabeled_image=images, unlabeled_label=labels,
                     unlabeled_valid=np.ones(labels.shape, bool))
    return sharding.global_batch(batch, mesh)


def model_flops(config: ml_collections.ConfigDict, mesh, step, state, batch) -> float:
    """FLOPs of one device's step, counted by XLA on the lowered (not yet optimised) program.

    XLA:GPU's cost analysis of the *compiled* step leaves out convolutions run as cuDNN custom
    calls (an H200 counted ~1 % of the Stanford step's FLOPs), and on GPU a `Lowered` has no
    cost analysis (None, jax 0.11). There, the same step is lowered for one CPU device with one
    device's share of the batch and XLA:CPU counts it; the model's arithmetic is the same,
    only the platform choices of `platforms.py` (scan vs unrolled, convolutions by taps) may
    differ slightly.
    """
    lowered = step.lower(state, batch)
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if analysis and analysis.get("flops"):
        return float(analysis["flops"])
    cpu_mesh = sharding.make_mesh(jax.devices("cpu")[:1])
    segmentor, adversary = state_lib.build_models(config)
    cpu_step = steps.make_train_step(config, cpu_mesh, segmentor, adversary)

    def on_cpu(leaf, spec):
        shape = leaf.shape if spec is None else (leaf.shape[0] // mesh.devices.size,
                                                 *leaf.shape[1:])
        return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=jax.sharding.NamedSharding(
                cpu_mesh, jax.sharding.PartitionSpec(*(() if spec is None else (spec,)))))

    cpu_state = jax.tree.map(lambda x: on_cpu(x, None), state)
    cpu_batch = jax.tree.map(lambda x: on_cpu(x, sharding.DATA_AXIS), batch)
    size = step.choice["microbatch_size"]
    return _flops(cpu_step.build(size).lower(cpu_state, cpu_batch))


def prepare_step(config: ml_collections.ConfigDict, mesh,
                 state: state_lib.AdvSegState) -> Tuple[Callable[[], object], dict]:
    """(a call running one training step of `config` from `state`, its figures: compile time,
    FLOPs, the microbatch chosen and XLA's estimated peak memory per device)."""
    segmentor, adversary = state_lib.build_models(config)
    batch = _synthetic_batch(config, mesh)
    start = time.perf_counter()
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    compiled = step.compile(state, batch)  # Chooses the microbatch (memory_fit.py).
    compile_time = time.perf_counter() - start
    holder = [state]

    def call():
        holder[0], metrics = step(holder[0], batch)  # The state is donated: keep the new one.
        return holder[0], metrics

    choice = step.choice
    # FLOPs of the lowered program, before the backend rewrites it: XLA:GPU's compiled cost
    # analysis leaves out convolutions run as cuDNN custom calls (on an H200 it counted ~1 % of
    # the Stanford step's FLOPs), which made GPU MFU ~100x too small. On CPU both agree to ~1 %.
    # One SPMD program per device: its cost is one device's share of the global batch.
    flops = model_flops(config, mesh, step, state, batch)
    return call, {"flops_per_step": flops * mesh.devices.size,
                  "compiled_flops_per_step": _flops(compiled) * mesh.devices.size,
                  "compile_time_s": compile_time,
                  "microbatch_size": choice["microbatch_size"],
                  "num_microbatches": choice["num_microbatches"],
                  "estimated_peak_memory_gb": choice["estimated_peak_memory_gb"],
                  "memory_limit_gb": choice["memory_limit_gb"],
                  "memory_limit_source": choice["memory_limit_source"],
                  "estimated_peak_memory_gb_tried": choice["estimated_peak_memory_gb_tried"]}


def _first_steps(calls: Dict[str, Callable[[], object]], results: dict) -> None:
    """Runs each step once, in turn, and records the memory high-water mark after it."""
    for name, call in calls.items():
        jax.block_until_ready(call())
        results[name].update({f"measured_{k}": v for k, v in _peak_memory().items()})
        results[name]["measured_peak_memory_gb"] = results[name].pop(
            "measured_peak_memory_mb") * 2**20 / 1e9


def time_round_robin(calls: Dict[str, Callable[[], object]], warmup: int,
                     repeats: int) -> Dict[str, float]:
    """Median seconds per call (blocked until ready), the calls interleaved.

    Interleaving exposes every call to the same host load, so ratios (adversarial/baseline,
    FLOP/s over the matmul peak) stay meaningful on a shared machine.
    """
    times = {name: [] for name in calls}
    for i in range(warmup + repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure_input(config: ml_collections.ConfigDict, batches: int) -> dict:
    """Images/s of the real training pipeline alone, on this process, after its start-up."""
    builder = dataset_info.builder(config)
    if config.dataset not in _SELF_BUILDING and not builder.is_prepared():
        return {"input_images_per_s": None,
                "input_reason": f"{config.dataset} is not prepared in {config.data_dir}; "
                                "build it with python -m advseg_jax.prepare_data."}
    pipeline = "grain"
    iterator = input_pipeline.train_iterator(config, input_pipeline.get_builder(config))
    for _ in range(3):  # Opening files, filling the shuffle buffer, warming the parallel map.
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    rows = config.batch_size // jax.process_count()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rate = batches * rows / seconds
    return {"input_images_per_s": rate, "input_images_per_s_per_core": rate / cores,
            "input_host_cores": cores, "input_pipeline": pipeline, "input_reason": None}


def _peak_memory() -> dict:
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return {"peak_memory_mb": stats["peak_bytes_in_use"] / 2**20,
                "peak_memory_source": "device memory_stats peak_bytes_in_use (device 0)"}
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB.
    return {"peak_memory_mb": kilobytes / 2**10,
            "peak_memory_source": "process max RSS (getrusage): host memory, no device stats"}


def benchmark_variants(config: ml_collections.ConfigDict) -> Dict[str, ml_collections.ConfigDict]:
    """The supervised baseline (every adversarial weight 0, no unlabeled rows) and the
    adversarial step (the config's λ_adv, or 0.5 if it has none; a semi-supervised config
    keeps its unlabeled rows and their terms: Hung et al.'s whole step)."""
    variants = {name: ml_collections.ConfigDict(config.to_dict())
                for name in ("baseline", "adversarial")}
    variants["baseline"].update(lambda_adv=0.0, lambda_adv_unlabeled=0.0, lambda_semi=0.0,
                                unlabeled_split="")
    variants["adversarial"].lambda_adv = config.lambda_adv if config.lambda_adv > 0 else 0.5
    return variants


def run_benchmark(config: ml_collections.ConfigDict, steps_timed: int = 10, warmup: int = 2,
                  peak_flops: Optional[float] = None, input_batches: int = 30,
                  profile_dir: Optional[str] = None,
                  peak_matmul_size: int = peak_lib.MATMUL_SIZE) -> dict:
    """Every figure of the benchmark, as a JSON-ready dict (see the module docstring).

    `peak_matmul_size`: the side of the CPU's peak matmuls (`--peak_matmul_size`); the
    default is the one MFU figures are quoted against, smaller ones only save time (a bfloat16
    2048² matmul takes seconds on a CPU, which emulates bfloat16)."""
    config = ml_collections.ConfigDict(config.to_dict())  # Unlocked private copy.
    config.segmentor.pretrained = ""
    mesh = sharding.make_mesh()
    if config.batch_size % mesh.devices.size:
        raise ValueError(f"batch_size={config.batch_size} must be a multiple of the "
                         f"{mesh.devices.size} devices.")
    load_before = os.getloadavg()[0]
    if config.dtype not in peak_lib.DTYPES:
        raise ValueError(f"dtype={config.dtype!r} has no peak to measure MFU against; valid "
                         f"options: {list(peak_lib.DTYPES)}.")
    variants = benchmark_variants(config)
    # Seconds, from shapes alone: a limit the state and its gradients exceed is refused before
    # the peak measurement, the initialisation and the compiles take minutes.
    memory_fit.check_lower_bound(variants["adversarial"],
                                 memory_fit.abstract_state(variants["adversarial"]))
    # Then the peak, while nothing of ours runs yet. MFU is against the peak of the run's dtype.
    peaks = measure_peaks(config.dtype, peak_flops, platforms.of_mesh(mesh), peak_matmul_size)
    per_device, peak_source = peaks[config.dtype]
    # One initialisation (its RNG compiles slowly on CPU); the baseline gets a copy of the
    # segmentor's state, as each step donates (invalidates) the state it is given.
    full = state_lib.create_train_state(variants["adversarial"], mesh)
    states = {"adversarial": full,
              "baseline": state_lib.AdvSegState(jax.tree.map(jnp.copy, full.segmentor), None)}
    calls, results = {}, {}
    for name, variant in variants.items():
        calls[name], results[name] = prepare_step(variant, mesh, states[name])
        results[name]["lambda_adv"] = variant.lambda_adv
    _first_steps(calls, results)  # The first warm-up round, one variant after the other.
    if profile_dir:
        jax.profiler.start_trace(profile_dir)
    seconds = time_round_robin(calls, max(warmup - 1, 0), steps_timed)
    if profile_dir:
        jax.profiler.stop_trace()
    total_peak = per_device * mesh.devices.size
    for name, step_time in seconds.items():
        figures = results[name]
        figures.update(step_time_s=step_time, images_per_s=config.batch_size / step_time,
                       mfu=figures["flops_per_step"] / step_time / total_peak,
                       mfu_dtype=config.dtype)
    base, adv = results["baseline"], results["adversarial"]
    results.update(measure_input(config, input_batches))
    consumed = adv["images_per_s"] / jax.process_count()  # Per process, like the input rate.
    results.update({
        "adversarial_over_baseline_time": adv["step_time_s"] / base["step_time_s"],
        "adversarial_over_baseline_flops": adv["flops_per_step"] / base["flops_per_step"],
        "compile_time_s": base["compile_time_s"] + adv["compile_time_s"],
        "input_over_adversarial_step_rate": (results["input_images_per_s"] / consumed
                                             if results["input_images_per_s"] else None),
        **_peak_memory(),
        "peak_flops": total_peak,
        "peak_flops_per_device": per_device,
        "peak_flops_source": peak_source,
        "peak_flops_dtype": config.dtype,  # The peak every variant's mfu is taken against.
        "peak_flops_by_dtype": {name: peak * mesh.devices.size
                                for name, (peak, _) in peaks.items()},
        "peak_flops_per_device_by_dtype": {name: peak for name, (peak, _) in peaks.items()},
        "peak_flops_source_by_dtype": {name: source for name, (_, source) in peaks.items()},
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "host_cpu_count": os.cpu_count(),
        "host_load_average_1m": os.getloadavg()[0],  # > host_cpu_count: others share the CPUs.
        "host_load_average_1m_at_start": load_before,  # Before anything of ours ran.
        "host_load_warning": peak_lib.load_warning(load_before),
        "dataset": config.dataset,
        "segmentor": config.segmentor.name,
        "adversary": config.adversary.name,
        "batch_size": config.batch_size,
        "crop_size": list(config.input.crop_size),
        "dtype": config.dtype,
        "steps_timed": steps_timed,
        "jax_version": jax.__version__,
    })
    return results


def _gb(value: Optional[float]) -> str:
    return "?" if value is None else f"{value:.2f}"


def _as_text(results: dict) -> str:
    lines = []
    for name in ("baseline", "adversarial"):
        r = results[name]
        lines.append(f"{name:12s} step {r['step_time_s'] * 1e3:9.2f} ms  "
                     f"{r['images_per_s']:9.1f} img/s  {r['flops_per_step'] / 1e9:9.2f} GFLOP  "
                     f"MFU {100 * r['mfu']:5.1f} % ({r['mfu_dtype']} peak)  "
                     f"compile {r['compile_time_s']:.1f} s  "
                     f"microbatch {r['microbatch_size']} x {r['num_microbatches']}  "
                     f"memory est. {_gb(r['estimated_peak_memory_gb'])} GB, measured "
                     f"{_gb(r['measured_peak_memory_gb'])} GB")
    for key, value in results.items():
        if key not in ("baseline", "adversarial"):
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def main(argv: List[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # Checked before anything slow: a bad flag must not cost minutes of compilation.
    for flag, value, minimum in ((_STEPS, _STEPS.value, 1), (_WARMUP, _WARMUP.value, 0),
                                 (_INPUT_BATCHES, _INPUT_BATCHES.value, 1)):
        if value < minimum:
            raise app.UsageError(f"--{flag.name}={value} must be >= {minimum}.")
    if _PEAK_FLOPS.value is not None and _PEAK_FLOPS.value <= 0:
        raise app.UsageError(f"--peak_flops={_PEAK_FLOPS.value} must be > 0.")
    try:
        config = config_checks.config_from_flag(flags.FLAGS)
        cli.hide_accelerators_from_tensorflow()
        distributed.initialize(None, None, None)
        try:  # Classes from the builder's metadata: the benchmark also runs on unprepared data.
            facts = dataset_facts.load(config, dataset_info.builder(config))
        except ValueError as error:  # A TFRecord build, no class names (a FolderError too).
            raise config_checks.ConfigError(str(error)) from None
        config = dataset_facts.with_num_classes(config, facts)
        config_checks.validate_config(config)
        config_checks.check_input_sizes(config)
        config_checks.check_class_count(config, facts)
    except (config_checks.ConfigError, folder_files.FolderError) as error:
        sys.exit(f"Error: {error}")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress: keep stdout JSON.
            results = run_benchmark(config, _STEPS.value, _WARMUP.value,
                                    _PEAK_FLOPS.value, _INPUT_BATCHES.value, _PROFILE_DIR.value,
                                    _PEAK_MATMUL_SIZE.value)
    except memory_fit.MemoryFitError as error:
        sys.exit(f"MemoryFitError: {error}")
    if results["host_load_warning"]:
        logging.warning("%s", results["host_load_warning"])
    if jax.process_index() == 0:
        print(json.dumps(results, indent=1) if _FORMAT.value == "json" else _as_text(results))


def run() -> None:
    flags.mark_flags_as_required(["config"])
    cli.run(main, __name__, config_from_workdir=True)


if __name__ == "__main__":
    run()
