"""This tree's input pipeline or training loop against a git revision's, alternating in one run.

    python bench/pipeline_side_by_side.py input --rev=7b43d2c \
        --config=configs/stanford_background.py --data_dir=/tmp/tfds_grain \
        --rev_data_dir=/tmp/tfds_tfdata --set dataset=stanford_background/fold0 \
        --set manual_dir=../shared/data/stanford_background --set batch_size=16
    python bench/pipeline_side_by_side.py loop --rev=7b43d2c --config=configs/default.py \
        --data_dir=/tmp/a --rev_data_dir=/tmp/b --steps=300

`bench/side_by_side.py` times the step function alone; what changed between the tf.data
pipeline and Grain, or between a loop that read every metric every step and one that reads them
once per log interval, lies outside it. Each mode runs the same work in the revision (unpacked
with `git archive`) and in this tree, one after the other, `--rounds` times, so a drifting host
load hits both alike; each tree reads its own `--data_dir`, since the revision may read another
file format (TFRecord) than this tree (array_record).

- `input`: `advseg_jax.benchmark.measure_input(config, --batches)` in a fresh process per
  measurement: images/s of the training batches alone (decode, augment, batch), after start-up.
- `loop`: `python -m advseg_jax.main` for `--steps` steps in a fresh workdir; wall time from
  start to exit, and steps/s as the loop logs it (`steps_per_sec`, median over log intervals
  after the first; every interval is kept, and `speedup_steps_per_s_pooled_median` compares
  the medians of all rounds' intervals pooled).

Prints one JSON: per tree the figures of every round, their best and median, and
`speedup_best` = revision best time / current best time (or current rate / revision rate).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List

import side_by_side  # bench/, this script's folder: the revision's export is shared.

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)

_INPUT_WORKER = """
import json, sys
bench, path, data_dir, batches, overrides = (sys.argv[1], sys.argv[2], sys.argv[3],
                                             int(sys.argv[4]), sys.argv[5:])
sys.path.insert(1, bench)  # After the measured tree (PYTHONPATH): its advseg_jax is measured.
import _step_worker
config = _step_worker.load_config(path, overrides)
config.data_dir = data_dir
from advseg_jax import benchmark
print(json.dumps(benchmark.measure_input(config, batches)))
"""


def _env(tree: str) -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        p for p in (tree, os.environ.get("PYTHONPATH")) if p))


def _input_rate(tree: str, data_dir: str, args: argparse.Namespace) -> float:
    done = subprocess.run([sys.executable, "-c", _INPUT_WORKER, _HERE,
                           os.path.join(tree, args.config), data_dir, str(args.batches),
                           *args.set], cwd=tree, env=_env(tree), capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the input measurement failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["input_images_per_s"] is None:
        raise SystemExit(f"{tree}: {result['input_reason']}")
    return result["input_images_per_s"]


def _loop(tree: str, data_dir: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="loop_side_by_side_") as workdir:
        command = [sys.executable, "-m", "advseg_jax.main", f"--config={args.config}",
                   f"--workdir={workdir}", f"--config.data_dir={data_dir}",
                   f"--config.num_train_steps={args.steps}",
                   f"--config.eval_every_steps={args.steps}",
                   f"--config.checkpoint_every_steps={args.steps}",
                   *[f"--config.{item}" for item in args.set]]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tree, env=_env(tree), capture_output=True, text=True,
                              check=False)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tree}: training failed:\n{done.stderr[-3000:]}")
    rates = [float(r) for r in re.findall(r"steps_per_sec=([0-9.eE+-]+)", done.stderr)]
    later = rates[1:] or rates
    return {"wall_s": wall, "steps_per_s": statistics.median(later) if later else None,
            "interval_steps_per_s": later}


def run(args: argparse.Namespace) -> dict:
    trees = {}
    with tempfile.TemporaryDirectory(prefix="pipeline_side_by_side_") as directory:
        side_by_side.export_revision(args.rev, directory)
        paths = {"revision": (directory, args.rev_data_dir), "current": (_ROOT, args.data_dir)}
        for round_ in range(args.rounds):
            for name, (tree, data_dir) in paths.items():
                if args.mode == "input":
                    figure = {"images_per_s": _input_rate(tree, data_dir, args)}
                else:
                    figure = _loop(tree, data_dir, args)
                trees.setdefault(name, []).append(figure)
                print(f"round {round_}: {name:>8s} {figure} (load {os.getloadavg()[0]:.2f})",
                      file=sys.stderr, flush=True)
    summary = {"mode": args.mode, "config": args.config, "overrides": args.set,
               "revision": args.rev, "rounds": args.rounds, "host_cpu_count": os.cpu_count()}
    key = "images_per_s" if args.mode == "input" else "wall_s"
    for name, figures in trees.items():
        values = [f[key] for f in figures]
        best = max(values) if args.mode == "input" else min(values)
        summary[name] = {"rounds": figures, f"best_{key}": best,
                         f"median_{key}": statistics.median(values)}
    old, new = summary["revision"][f"best_{key}"], summary["current"][f"best_{key}"]
    summary["speedup_best"] = new / old if args.mode == "input" else old / new
    if args.mode == "loop":
        rates = {n: [f["steps_per_s"] for f in figures if f["steps_per_s"]]
                 for n, figures in trees.items()}
        if rates["current"] and rates["revision"]:
            summary["speedup_steps_per_s_best"] = max(rates["current"]) / max(rates["revision"])
        # Every logged interval of every round, pooled: more samples than rounds for a
        # difference smaller than the spread between rounds.
        pooled = {n: [r for f in figures for r in f["interval_steps_per_s"]]
                  for n, figures in trees.items()}
        if pooled["current"] and pooled["revision"]:
            summary["speedup_steps_per_s_pooled_median"] = (
                statistics.median(pooled["current"]) / statistics.median(pooled["revision"]))
    return summary


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("input", "loop"))
    parser.add_argument("--rev", required=True, help="git revision to compare with")
    parser.add_argument("--config", required=True, help="config file, relative to the repo root")
    parser.add_argument("--data_dir", required=True, help="this tree's TFDS data_dir")
    parser.add_argument("--rev_data_dir", required=True, help="the revision's TFDS data_dir")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per tree")
    parser.add_argument("--batches", type=int, default=30, help="input: batches timed")
    parser.add_argument("--steps", type=int, default=300, help="loop: training steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both trees, e.g. --set batch_size=16")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    print(json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
