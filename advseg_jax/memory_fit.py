"""The microbatch that fits: chosen from XLA's memory analysis of the compiled step, never an OOM.

`config.microbatch_size = 0` takes the largest microbatch (a divisor of the per-device batch, whose
microbatch count also divides the per-device unlabeled batch, if any)
whose compiled step's estimated peak, argument + output - aliased + temp bytes from
`compiled.memory_analysis()`, stays within the device's limit less SAFETY_MARGIN. The limit is
`config.memory_limit_gb` when set, else `device.memory_stats()["bytes_limit"]` (GPU/TPU), else
on CPU the host's MemAvailable shared by its local devices; an accelerator that reports no
`bytes_limit` is refused (MemoryFitError asking for `--config.memory_limit_gb`), never left
unchecked. Before any compile, a lower bound that needs none (float32 parameters, their
gradients and the optimizer states, from the state's shapes) is checked: a limit it already
exceeds is refused in seconds, not after minutes of compiling. Search: the whole batch in one
microbatch first (the usual case: it is then the program that runs, compiled once); if it does
not fit, a one-row program (the floor: if even that does not fit, MemoryFitError says so before
any step), then the largest divisor that a line through those two estimates predicts to fit,
each candidate compiled and checked. An XLA out-of-memory that still happens while running is
re-raised as MemoryFitError, a short message, not a trace.
"""

import os
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

# Kept free below the limit: XLA's estimate omits allocator fragmentation and the runtime's
# own buffers, and on CPU other processes may take memory after the choice.
SAFETY_MARGIN = 0.10
GB = 1e9


class MemoryFitError(ValueError):
    """The step cannot fit the device's memory; the message gives the need, limit and options."""


def estimated_peak_bytes(compiled) -> Optional[int]:
    """Peak bytes of one device's program: arguments + outputs - donated aliases + temporaries."""
    analysis = compiled.memory_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
               - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes
               + analysis.generated_code_size_in_bytes)


def _host_available_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def memory_limit(config: ml_collections.ConfigDict) -> Tuple[Optional[float], str]:
    """(bytes one device may use, where that figure comes from).

    The same on every process (the smallest), so that all compile the same program. Without
    `config.memory_limit_gb`, an accelerator whose `memory_stats()` has no `bytes_limit` (or
    none at all) raises MemoryFitError: a guess could let the step run out of memory mid-run.
    """
    if config.memory_limit_gb > 0:
        limit, source = config.memory_limit_gb * GB, "config.memory_limit_gb"
    else:
        device = jax.local_devices()[0]
        stats = device.memory_stats() or {}
        if stats.get("bytes_limit"):
            limit, source = float(stats["bytes_limit"]), "device memory_stats()['bytes_limit']"
        elif device.platform == "cpu" and _host_available_bytes():
            count = jax.local_device_count()
            limit = _host_available_bytes() / count
            source = (f"host MemAvailable ({limit * count / GB:.1f} GB) over {count} local "
                      f"CPU device{'s' if count > 1 else ''}")
        else:
            raise MemoryFitError(
                f"Device {device} ({device.platform}) reports no memory limit (memory_stats() "
                f"= {None if not stats else sorted(stats)}: no 'bytes_limit'), so the microbatch "
                "cannot be checked against it. Set --config.memory_limit_gb=N (GB one device "
                "may use, e.g. its memory less what other processes hold), or "
                "--config.microbatch_size=N to choose the microbatch yourself.")
    if jax.process_count() > 1:
        limit = float(np.min(multihost_utils.process_allgather(np.array(limit))))
    return limit, source


def _options(config: ml_collections.ConfigDict) -> str:
    return (f"Options: a smaller crop (--config.input.crop_size, now "
            f"{tuple(config.input.crop_size)}), --config.dtype=bfloat16 (GPU/TPU; now "
            f"{config.dtype}), more devices (the batch is split over them), or "
            "--config.memory_limit_gb=N if the limit above is wrong.")


def _limit_text(limit: Optional[float], source: str) -> str:
    if limit is None:
        return f"limit {source}"
    return (f"limit {limit / GB:.2f} GB ({source}) less a {SAFETY_MARGIN:.0%} safety margin = "
            f"{(1 - SAFETY_MARGIN) * limit / GB:.2f} GB")


def too_large_message(config: ml_collections.ConfigDict, need: float, limit: Optional[float],
                      source: str) -> str:
    return (f"The training step does not fit in device memory: even a microbatch of 1 image per "
            f"device needs an estimated {need / GB:.2f} GB per device (XLA memory analysis of "
            f"the compiled step; segmentor {config.segmentor.name!r}), over the "
            f"{_limit_text(limit, source)}. {_options(config)}")


def out_of_memory_message(config: ml_collections.ConfigDict, choice: dict,
                          error: Exception) -> str:
    first_line = next((line for line in str(error).splitlines() if "RESOURCE_EXHAUSTED" in line),
                      str(error).splitlines()[0] if str(error) else type(error).__name__)
    estimate = choice.get("estimated_peak_memory_gb")
    return (f"Out of memory running the training step at microbatch_size="
            f"{choice['microbatch_size']} ({choice['num_microbatches']} microbatches per device; "
            f"estimated {'?' if estimate is None else f'{estimate:.2f}'} GB per device, "
            f"{_limit_text(choice['memory_limit_bytes'], choice['memory_limit_source'])}): "
            f"{first_line.strip()[:300]}. Other processes may hold the memory; "
            "--config.memory_limit_gb=N (lower) or --config.microbatch_size=N (smaller) makes the "
            f"step smaller. {_options(config)}")


def state_lower_bound_bytes(state) -> int:
    """Bytes one device needs whatever the microbatch: the state (float32 parameters, optimizer
    states, step counters) plus one gradient per parameter. Reads only shapes and dtypes, so
    `state` may be abstract (`jax.eval_shape`) and nothing is compiled or allocated. The state
    is replicated: each device holds all of it."""
    def nbytes(tree) -> int:
        return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree))

    players = [player for player in (state.segmentor, state.adversary) if player is not None]
    return nbytes(state) + sum(nbytes(player.params) for player in players)


def abstract_state(config: ml_collections.ConfigDict):
    """The fresh training state's shapes and dtypes (jax.eval_shape): nothing computed or
    allocated, so callers can check the lower bound before the slow initialisation."""
    from advseg_jax import state as state_lib  # Here: state_lib is not needed by the step.
    from flax.training import train_state
    from advseg_jax import encodings, optim
    segmentor, adversary = state_lib.build_models(config)
    crop = tuple(config.input.crop_size)
    adversary_map = (state_lib.adversary_map_shape(config, segmentor, crop)
                     if adversary is not None else None)

    def fresh():
        key = jax.random.key(0)
        seg = train_state.TrainState.create(
            apply_fn=segmentor.apply, tx=optim.make_optimizer(config.segmentor, 1),
            params=segmentor.init(key, jnp.zeros((1, *crop, 3)), train=False)["params"])
        if adversary is None:
            return state_lib.AdvSegState(seg, None)
        channels = encodings.encoded_channels(config.adversary.encoding, config.num_classes)
        params = adversary.init(key, jnp.zeros((1, *adversary_map, 3)),
                                jnp.zeros((1, *adversary_map, channels)), train=False)["params"]
        adv = train_state.TrainState.create(
            apply_fn=adversary.apply, params=params,
            tx=optim.make_optimizer(config.adversary, 1))
        return state_lib.AdvSegState(seg, adv)

    return jax.eval_shape(fresh)


def check_lower_bound(config: ml_collections.ConfigDict, state) -> None:
    """MemoryFitError if `state` (concrete or abstract) plus its gradients exceed the limit."""
    limit, source = memory_limit(config)
    least = state_lower_bound_bytes(state)
    if least > (1 - SAFETY_MARGIN) * limit:
        raise MemoryFitError(lower_bound_message(config, least, limit, source))


def lower_bound_message(config: ml_collections.ConfigDict, need: float, limit: float,
                        source: str) -> str:
    return (f"The training step does not fit in device memory: the parameters, their gradients "
            f"and the optimizer states alone need {need / GB:.2f} GB per device (counted from "
            f"their shapes, before any compile; segmentor {config.segmentor.name!r}), over the "
            f"{_limit_text(limit, source)}. {_options(config)}")


def _microbatch_sizes(rows: int, other_rows) -> list:
    """Sizes m (largest first) that cut `rows` into K = rows / m microbatches such that K also
    divides every other input's rows (the unlabeled batch: each microbatch takes 1/K of it)."""
    return [m for m in range(rows, 0, -1)
            if rows % m == 0 and all(r % (rows // m) == 0 for r in other_rows)]


def _with_rows(batch: dict, global_rows: int) -> dict:
    """Abstract copy of `batch` with `global_rows` rows, same dtypes and shardings."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((global_rows, *x.shape[1:]), x.dtype,
                                                       sharding=x.sharding), batch)


def choose(build: Callable[[int], Any], config: ml_collections.ConfigDict, mesh,
           state, batch) -> Tuple[Any, Dict[str, Any]]:
    """(compiled step, the choice and its memory figures) for this state and batch."""
    devices = mesh.devices.size
    rows = batch["image"].shape[0] // devices
    other_rows = {leaf.shape[0] // devices for leaf in jax.tree.leaves(batch)}
    if config.microbatch_size > 0 and config.memory_limit_gb <= 0:
        try:  # The size is given; the limit only serves a warning.
            limit, source = memory_limit(config)
        except MemoryFitError as error:
            logging.warning("%s", error)
            limit, source = None, "unknown: memory_stats() has no bytes_limit"
    else:
        limit, source = memory_limit(config)
    budget = np.inf if limit is None else (1 - SAFETY_MARGIN) * limit
    least = state_lower_bound_bytes(state)
    if least > budget:
        raise MemoryFitError(lower_bound_message(config, least, limit, source))
    tried: Dict[str, Optional[float]] = {}

    def compile_at(size: int, shapes=batch, label: Optional[str] = None):
        compiled = build(size).lower(state, shapes).compile()
        need = estimated_peak_bytes(compiled)
        tried[label or str(size)] = None if need is None else need / GB
        return compiled, (0 if need is None else need)

    def chosen(size: int, compiled, need: float):
        choice = {"microbatch_size": size, "num_microbatches": rows // size,
                  "rows_per_device": rows,
                  "estimated_peak_memory_gb": tried[str(size)],
                  "memory_limit_gb": None if limit is None else limit / GB,
                  "memory_limit_bytes": limit, "memory_limit_source": source,
                  "safety_margin": SAFETY_MARGIN, "estimated_peak_memory_gb_tried": dict(tried)}
        logging.info("Microbatch: %d of the %d images per device (%d microbatch(es), their "
                     "gradients summed); estimated peak %s GB per device (XLA memory analysis), "
                     "%s; "
                     "tried (microbatch: GB): %s", size, rows, rows // size,
                     "?" if need is None else f"{need / GB:.2f}", _limit_text(limit, source),
                     ", ".join(f"{k}: {'?' if v is None else f'{v:.2f}'}"
                               for k, v in tried.items()))
        return compiled, choice

    if config.microbatch_size > 0:
        size = min(config.microbatch_size, rows)
        compiled, need = compile_at(size)
        if need > budget:
            logging.warning("microbatch_size=%d needs an estimated %.2f GB per device, over the "
                            "%s: it may run out of memory (microbatch_size=0 chooses one that "
                            "fits).", size, need / GB, _limit_text(limit, source))
        return chosen(size, compiled, need)
    compiled, whole = compile_at(rows)
    if whole <= budget:
        return chosen(rows, compiled, whole)
    floor = whole
    if rows > 1:  # One row per device in one microbatch: no accumulated step needs less.
        _, floor = compile_at(1, _with_rows(batch, devices), label="1 (one-row step, floor)")
    if floor > budget:
        raise MemoryFitError(too_large_message(config, floor, limit, source))
    for size in _microbatch_sizes(rows, other_rows)[1:]:
        predicted = floor + (whole - floor) * (size - 1) / max(rows - 1, 1)
        if predicted > budget:
            continue
        compiled, need = compile_at(size)
        if need <= budget:
            return chosen(size, compiled, need)
    raise MemoryFitError(too_large_message(config, (tried.get("1") or floor / GB) * GB, limit,
                                           source))


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


class SizedStep:
    """The training step, called like a jitted function, its microbatch settled on first use.

    `build(microbatch_size)` returns the jitted step for that size; `choice` holds the size
    and memory figures once `compile`, `lower` or a call has seen the state and batch.
    """

    def __init__(self, build: Callable[[int], Any], config: ml_collections.ConfigDict, mesh):
        self.build, self._config, self._mesh = build, config, mesh
        self._compiled, self._signature = None, None
        self.choice: Optional[Dict[str, Any]] = None

    def compile(self, state, batch):
        """The compiled step for these shapes (chosen, compiled and logged once)."""
        signature = _signature((state, batch))
        if signature != self._signature:
            self._compiled, self.choice = choose(self.build, self._config, self._mesh,
                                                 state, batch)
            self._signature = signature
        return self._compiled

    def lower(self, state, batch):
        """jax's `Lowered` of the chosen step, for ahead-of-time callers."""
        self.compile(state, batch)
        return self.build(self.choice["microbatch_size"]).lower(state, batch)

    def __call__(self, state, batch):
        compiled = self.compile(state, batch)
        try:
            return compiled(state, batch)
        except Exception as error:  # XLA's runtime error; only its out-of-memory is ours.
            if "RESOURCE_EXHAUSTED" not in str(error):
                raise
            raise MemoryFitError(out_of_memory_message(self._config, self.choice,
                                                       error)) from None
