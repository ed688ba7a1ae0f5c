"""One prepared call that checks an accelerator: what only a GPU/TPU runs, measured there.

    python bench/device_check.py --out=DIR --manual_dir=PATH/TO/stanford_background
    python bench/device_check.py --smoke --out=DIR        # this CPU, tiny settings, < 3 min

Writes DIR/device_check.json (`environment`, `checks`, `benchmarks`, `training`, `errors`) and
DIR/device_check.log, the JSON rewritten after every part, so that a call cut short by its time
limit still returns what was done. Each part catches its own failure (recorded under `errors`
with its traceback) and the next part runs: one broken path must not hide the others.

- `checks`: the whole train step with scan and unrolled accumulation (K = 2 and 4) against
  K = 1, at float32 matmul precision "highest" (TF32 would blur a 1e-4 comparison); a bfloat16
  train step (finite losses, float32 parameters and optimizer states); the memory limit
  `memory_fit` takes from the device itself; a state restored after an asynchronous save.
- `benchmarks`: `advseg_jax.benchmark.run_benchmark` for stanford_background at batch 16 in
  float32 and bfloat16 and voc at batch 16 in bfloat16 (microbatch, estimated and measured
  memory, step time, MFU against each dtype's peak, compile time).
- `training`: a short paper-scale Stanford adversarial run (fold 0, 2,000 steps, one
  evaluation) through `train.train_and_evaluate`: steps/s, `input_wait_fraction`, wall and
  compile time, the evaluation's scores.

The accelerator image this is written for has jax (CUDA), flax, optax, orbax-checkpoint, numpy,
pillow, tensorboard, protobuf, pyarrow, etils, dm-tree's needs and wrapt, but none of
TensorFlow, tensorflow-datasets, ml-collections or grain. The wheels to carry (CPython 3.12,
manylinux x86_64; `bench/fetch_device_wheels.sh` downloads exactly these, 11 MB in all):
tensorflow-datasets 4.9.10, ml-collections 1.1.0, grain 0.2.18, array-record 0.8.6,
dm-tree 0.1.10, immutabledict 4.3.1, promise 2.3 (sdist only on PyPI: built into a wheel here),
simple-parsing 0.1.9, docstring-parser 0.18.0, tensorflow-metadata 1.21.0,
googleapis-common-protos 1.76.0, termcolor 3.3.0, toml 0.10.2, portpicker 1.6.0,
importlib-resources 7.1.0. Data: the Stanford Background archive `iccv09Data.tar.gz`
(14.7 MB) in the folder given as `--manual_dir`; it is prepared as array_record under DIR.
"""

import json
import logging as python_logging
import os
import platform
import sys
import time
import traceback
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--smoke" in sys.argv:  # Before JAX reads XLA_FLAGS.
    # The smoke checks paths, not speed: its tiny programs spend their time compiling, which
    # these flags make several times shorter (the HLO, and so every check, is the same).
    from advseg_jax import fast_compile  # pylint: disable=g-import-not-at-top
    os.environ["XLA_FLAGS"] = fast_compile.with_fast_compile(os.environ.get("XLA_FLAGS", ""))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from advseg_jax import host_info  # noqa: E402

_OUT = flags.DEFINE_string("out", None, "Folder for device_check.json and device_check.log.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder holding the Stanford Background archive iccv09Data.tar.gz. "
    "Without it, benchmarks read no input and training runs on digit_scenes.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the dataset is prepared as "
                                "array_record (default: OUT/tfds).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny settings for this CPU: the paths, not figures.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 2000, "Steps of the training part.")
_BUDGET_S = flags.DEFINE_float("budget_s", 420.0, "Parts not started by then are skipped (a "
                               "time-out kills the call; the JSON says what was skipped).")
_PARTS = flags.DEFINE_list("parts", [], "Only these parts (e.g. data,training), to redo what "
                          "an earlier call could not; default: all.")
flags.mark_flags_as_required(["out"])

RESULT = "device_check.json"
LOG = "device_check.log"
TOLERANCE = 1e-4  # Scan vs unrolled vs K = 1, relative, at "highest" matmul precision.


class Report:
    """The JSON being filled in; written again after every part."""

    def __init__(self, out: str, budget_s: float, only=()):
        self.path = os.path.join(out, RESULT)
        self.only = set(only)
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.data = {"environment": {}, "checks": [], "benchmarks": {}, "training": {},
                     "errors": {}, "skipped": [], "parts_s": {}}

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        temporary = self.path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(self.data, f, indent=1, default=_jsonable)
        os.replace(temporary, self.path)  # Never a half-written JSON.

    def part(self, name: str, run: Callable[[], None]) -> None:
        """Runs one part unless the budget is spent; records its time or its failure."""
        elapsed = time.perf_counter() - self.start
        if self.only and name != "environment" and name.split(":")[-1] not in self.only \
                and name.split(":")[0] not in self.only:
            return
        if elapsed > self.budget_s:
            self.data["skipped"].append(f"{name}: budget of {self.budget_s:.0f} s spent "
                                        f"({elapsed:.0f} s elapsed)")
        else:
            logging.info("device_check: %s (%.0f s elapsed)", name, elapsed)
            started = time.perf_counter()
            try:
                run()
            except Exception as error:  # noqa: BLE001  Recorded; the next part still runs.
                logging.exception("device_check: %s failed", name)
                self.data["errors"][name] = "".join(
                    traceback.format_exception(type(error), error, error.__traceback__))[-4000:]
            self.data["parts_s"][name] = round(time.perf_counter() - started, 1)
        self.write()


def _jsonable(value):
    try:
        import numpy as np
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:
        pass
    return str(value)


def _version(package: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    import jax
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    try:
        import tensorflow  # noqa: F401  Only to say whether it is there.
        tensorflow_importable = True
    except ImportError:
        tensorflow_importable = False
    return {"python": platform.python_version(), "platform": device.platform,
            "device_kind": device.device_kind, "device_count": jax.device_count(),
            "bytes_limit": stats.get("bytes_limit"), "host_cpu_model": host_info.cpu_model(),
            "host_cpu_count": os.cpu_count(), "tensorflow_importable": tensorflow_importable,
            "versions": {name: _version(name) for name in (
                "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "pillow",
                "tensorflow-datasets", "grain", "array-record", "ml-collections",
                "tensorboard", "protobuf")}}


def _check(report: Report, name: str, run: Callable[[], dict]) -> None:
    def record():
        figures = run()
        report.data["checks"].append({"name": name, **figures})
    report.part(f"check:{name}", record)
    if f"check:{name}" in report.data["errors"]:
        report.data["checks"].append({"name": name, "passed": False, "error": "see errors"})
        report.write()


def _main(argv) -> None:
    del argv
    out = os.path.abspath(os.path.expanduser(_OUT.value))
    os.makedirs(out, exist_ok=True)
    log_file = python_logging.FileHandler(os.path.join(out, LOG))
    log_file.setFormatter(python_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.get_absl_logger().addHandler(log_file)
    logging.set_verbosity(logging.INFO)
    from bench import device_check_parts as parts  # After flags: imports jax and the project.

    report = Report(out, _BUDGET_S.value, _PARTS.value)
    report.data["smoke"] = _SMOKE.value
    report.data["command"] = " ".join(sys.argv)
    report.part("environment", lambda: report.data["environment"].update(environment()))
    settings = parts.Settings(smoke=_SMOKE.value, out=out,
                              manual_dir=_MANUAL_DIR.value and os.path.abspath(_MANUAL_DIR.value),
                              train_steps=_TRAIN_STEPS.value,
                              data_dir=_DATA_DIR.value or os.path.join(out, "tfds"))
    report.part("data", lambda: report.data.update(data=parts.prepare_data(settings)))
    _check(report, "accumulation_scan_unrolled_k1", lambda: parts.check_accumulation(
        settings, TOLERANCE))
    _check(report, "bfloat16_train_step", lambda: parts.check_bfloat16(settings))
    _check(report, "memory_fit_device_limit", parts.check_memory_limit)
    _check(report, "restore_after_async_save", lambda: parts.check_restore(settings))
    for name in ("stanford_float32", "stanford_bfloat16"):
        report.part(f"benchmark:{name}", lambda name=name: report.data["benchmarks"].update(
            {name: parts.benchmark(settings, name)}))
    report.part("training", lambda: report.data["training"].update(parts.train(settings)))
    report.part("benchmark:voc_bfloat16", lambda: report.data["benchmarks"].update(
        {"voc_bfloat16": parts.benchmark(settings, "voc_bfloat16")}))
    report.data["parts"] = _PARTS.value or "all"
    report.data["passed"] = (not report.data["errors"] and not report.data["skipped"]
                             and all(c.get("passed") for c in report.data["checks"]))
    report.write()
    logging.info("device_check: %s in %.0f s; %s", "passed" if report.data["passed"] else
                 "NOT passed", time.perf_counter() - report.start, report.path)


if __name__ == "__main__":
    app.run(_main)
