"""Runs a named ablation sweep: one `python -m advseg_jax.main` per (variant, seed).

    python experiments/ablations.py --config=configs/default.py --sweep=encodings \\
        --workdir=/tmp/sweep [--seeds=3] [--steps=500] [--variants=baseline,product] \\
        [--parallel=N] [--dry_run] [--config.KEY=VALUE ...]

Installed, the same flags work as the `advseg-ablations` console script (a shipped config can
be named, e.g. `--config=voc`).

Each run is an ordinary training run in DIR/<variant>/seed_<k>, so it resumes from its own
checkpoints when the sweep is restarted, and a finished run (its eval_results.json is at the
final step) is skipped. `--parallel=N` runs N at once, each pinned to its own N-th of the CPUs
(docs/experiments.md, "The five-fold Stanford study"). Runs are separate processes, not calls
into `train`, so that a crash or a memory leak in one run cannot take the others down and so
that `--dry_run` can hand the very same commands to a cluster or a notebook. When all runs are
done, `experiments/results.py` writes DIR/results.md, DIR/results.json and the plots.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

if __package__ in (None, ""):  # Run as a script: make `experiments` and `configs` importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from advseg_jax import cli  # noqa: E402
from advseg_jax import configs  # noqa: E402
from advseg_jax import workdir_io  # noqa: E402

# `experiments.results` in a checkout, `advseg_jax.experiments.results` in an installed wheel.
if __package__ in (None, ""):
    from experiments import results  # noqa: E402
else:
    from . import results  # noqa: E402

# Tuning on fold 0 without its test images: train on the first 80 % of the training split,
# score on the last 20 % (TFDS split slicing): 30 epochs of those 458 images at batch 8.
_STANFORD_HELD_OUT = {"train_split": "train[:80%]", "eval_split": "train[80%:]",
                      "num_train_steps": 1_718, "eval_every_steps": 573,
                      "checkpoint_every_steps": 573}

# Sweep name → variant name → config overrides. Every comparison of the paper that our configs
# can express; the first variant of a sweep is its reference point in tables and plots.
SWEEPS: Dict[str, Dict[str, Dict[str, Any]]] = {
    # Sec. 3.2: which label-map encoding lets the adversary see more than "one-hot or not".
    "encodings": {
        "baseline": {"lambda_adv": 0.0},
        "basic": {"adversary.encoding": "basic"},
        "product": {"adversary.encoding": "product"},
        "scaling": {"adversary.encoding": "scaling"},
    },
    # Weight of the adversarial term; 0 is the baseline (no adversary is built).
    "lambda": {
        "lambda_0": {"lambda_adv": 0.0},
        "lambda_0.02": {"lambda_adv": 0.02},  # configs/default.py's value.
        "lambda_0.05": {"lambda_adv": 0.05},
        "lambda_0.1": {"lambda_adv": 0.1},
        "lambda_0.5": {"lambda_adv": 0.5},
        "lambda_1": {"lambda_adv": 1.0},
        "lambda_2": {"lambda_adv": 2.0},
    },
    # Sec. 4.2: the VOC adversaries' field of view and width.
    "adversary": {
        "largefov": {"adversary.name": "largefov"},
        "largefov_light": {"adversary.name": "largefov_light"},
        "smallfov": {"adversary.name": "smallfov"},
        "smallfov_light": {"adversary.name": "smallfov_light"},
    },
    # Sec. 4.1 on configs/stanford_cpu.py: λ (adversary lr 1e-4) chosen on held-out training
    # images; the variant with the best held-out mean class accuracy goes into the config.
    "stanford_tuning": {
        "lambda_0": {**_STANFORD_HELD_OUT, "lambda_adv": 0.0},
        "lambda_0.1": {**_STANFORD_HELD_OUT, "lambda_adv": 0.1},
        "lambda_0.5": {**_STANFORD_HELD_OUT, "lambda_adv": 0.5},
        "lambda_2": {**_STANFORD_HELD_OUT, "lambda_adv": 2.0},
    },
    # Sec. 4.1, Fig. 4 on configs/stanford_cpu.py: classical vs adversarial training on a fold.
    "stanford_fig4": {
        "classical": {"lambda_adv": 0.0},
        "adversarial": {},  # The config's tuned λ.
    },
    # Hung et al. 2018 on configs/stanford_semi.py (72 labeled images of fold 0, 500 unlabeled):
    # the three arms of issue 19. The supervised arm streams no unlabeled images and builds no
    # discriminator: it costs what a plain segmentor costs.
    "stanford_semi": {
        "supervised": {"lambda_adv": 0.0, "lambda_adv_unlabeled": 0.0, "lambda_semi": 0.0,
                       "unlabeled_split": ""},
        "adversarial": {"lambda_semi": 0.0},
        "adversarial_semi": {},  # The config: adversarial terms and self-training.
        # Issue 32. Thresholds chosen by experiments/choose_semi_threshold.py on the held-out
        # slice train[72:144] before the final runs, never on the test fold (the rule and the
        # pilots: experiments/results/stanford_semi_fold0/threshold_choice.md).
        "softmax_semi": {"semi_selection": "softmax", "lambda_adv": 0.0,
                         "lambda_adv_unlabeled": 0.0,  # No discriminator is built.
                         "semi_threshold": 0.95},
        "adversarial_semi_rechosen": {"semi_selection": "discriminator", "semi_threshold": 0.7},
    },
    # Sec. 3.1: the non-saturating segmentor loss the paper trains with vs the minimax form.
    "loss_form": {
        "non_saturating": {"adversarial_loss": "non_saturating"},
        "saturating": {"adversarial_loss": "saturating"},
    },
}

_CONFIG_PREFIX = "--config."
_POLL_SECONDS = 0.5  # How often a sweep checks whether a run has ended.
_OVERRIDE = re.compile(r"^(-{1,2})(no)?config\.")


class Run(NamedTuple):
    """One training run of a sweep."""

    variant: str
    seed: int
    workdir: str
    argv: List[str]  # Everything after the Python executable.


def get_sweep(name: str) -> Dict[str, Dict[str, Any]]:
    if name not in SWEEPS:
        raise ValueError(f"Unknown sweep {name!r}; valid sweeps: {sorted(SWEEPS)}.")
    return SWEEPS[name]


def select_variants(sweep: str, names: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Any]]:
    """The sweep's variants, or only `names` (in the sweep's order) for a partial run."""
    variants = get_sweep(sweep)
    if not names:
        return dict(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise ValueError(f"Unknown variants {unknown} for sweep {sweep!r}; valid variants: "
                         f"{list(variants)}.")
    return {n: o for n, o in variants.items() if n in names}


def split_passthrough(argv: Sequence[str]) -> List[str]:
    """The config overrides of `argv`, in order, as `--config.KEY=VALUE`: every run gets them."""
    passthrough, i = [], 0
    while i < len(argv):
        match = _OVERRIDE.match(argv[i])
        if match:
            flag = "--" + argv[i][match.end(1):]  # Normalised to two dashes.
            negated = argv[i].lstrip("-").startswith("no")
            if "=" not in flag and not negated and i + 1 < len(argv) and (
                    not argv[i + 1].startswith("-")):
                i += 1  # "--config.KEY VALUE": absl's two-token form.
                flag = f"{flag}={argv[i]}"
            passthrough.append(flag)
        i += 1
    return passthrough


def _override_key(flag: str) -> str:
    return _OVERRIDE.sub("", flag).split("=", 1)[0]


def build_runs(config_path: str, sweep: str, workdir: str, seeds: int = 1,
               steps: Optional[int] = None, passthrough: Sequence[str] = (),
               variants: Optional[Sequence[str]] = None) -> List[Run]:
    """Every (variant, seed) run, seed-major: an interrupted sweep still compares all variants.

    The sweep's own overrides come after `passthrough`, and a passthrough that sets a swept
    key (or the seed) is refused: otherwise the table would name a setting the run never had.
    """
    selected = select_variants(sweep, variants)
    if seeds < 1:
        raise ValueError(f"--seeds={seeds} must be >= 1.")
    swept = {key for overrides in selected.values() for key in overrides} | {"seed"}
    if steps is not None:
        swept.add("num_train_steps")
    clashes = [flag for flag in passthrough if _override_key(flag) in swept]
    if clashes:
        raise ValueError(f"{clashes} set keys that sweep {sweep!r} (or --seeds/--steps) sets per "
                         f"run: {sorted(swept)}. Drop them, or use --seeds/--steps.")
    runs = []
    for seed in range(seeds):
        for variant, overrides in selected.items():
            run_dir = os.path.join(workdir, variant, f"seed_{seed}")
            argv = ["-m", "advseg_jax.main", f"--config={config_path}", f"--workdir={run_dir}",
                    *passthrough, *results.override_flags(overrides),
                    f"{_CONFIG_PREFIX}seed={seed}"]
            if steps is not None:
                argv.append(f"{_CONFIG_PREFIX}num_train_steps={steps}")
            runs.append(Run(variant, seed, run_dir, argv))
    return runs


def command_line(run: Run, python: str = "python") -> str:
    return shlex.join([python, *run.argv])


def is_finished(run_dir: str, num_train_steps: Optional[int] = None) -> bool:
    """True if the run's last evaluation is at its final step (and that is `num_train_steps`).

    Reads only the files `train.py` writes atomically, so a run killed at any point reads as
    unfinished and is resumed.
    """
    try:
        config = workdir_io.read_config(run_dir)
        if config is None:
            return False
        final_step = config["num_train_steps"]
        step = workdir_io.read_eval_results(run_dir)["step"]
    except (OSError, ValueError, KeyError):
        return False
    if num_train_steps is not None and final_step != num_train_steps:
        return False
    return step == final_step


def write_manifest(workdir: str, config_path: str, sweep: str, runs: Sequence[Run],
                   passthrough: Sequence[str]) -> None:
    """What was run, so `results.py` can order and describe variants without the runner."""
    variants = get_sweep(sweep)
    names = list(dict.fromkeys(run.variant for run in runs))
    manifest = {"sweep": sweep, "config": config_path, "passthrough": list(passthrough),
                "seeds": sorted({run.seed for run in runs})}
    previous = workdir_io.read_manifest(workdir)
    if previous:  # A partial re-run adds to the variants and seeds run before.
        if previous.get("sweep") == sweep:
            names = set(previous["variants"]) | set(names)
            manifest["seeds"] = sorted(set(previous["seeds"]) | set(manifest["seeds"]))
    manifest["variants"] = {name: variants[name] for name in variants if name in names}
    workdir_io.write_manifest(workdir, manifest)


def _subprocess_env() -> dict:
    """The runs import the `advseg_jax` this runner sees (a checkout's, or the installed one)."""
    root = os.path.dirname(os.path.dirname(importlib.util.find_spec("advseg_jax").origin))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _final_step(run: Run, num_train_steps: Optional[int]) -> Optional[int]:
    """The step `run` must reach: its own `num_train_steps` override (a sweep's variant or
    --steps, the last on its command line) wins over the config's."""
    prefix = f"{_CONFIG_PREFIX}num_train_steps="
    own = [int(arg[len(prefix):]) for arg in run.argv if arg.startswith(prefix)]
    return own[-1] if own else num_train_steps


def cpu_shares(parallel: int, cpus: Optional[Sequence[int]] = None) -> List[List[int]]:
    """`parallel` disjoint, equal-as-possible slices of this process's CPUs, one per slot.

    A run pinned to its own share (and XLA and tf.data size their thread pools by the CPUs a
    process may use) does not fight the other runs for cores.
    """
    cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if parallel < 1 or parallel > len(cpus):
        raise ValueError(f"--parallel={parallel} must be between 1 and the {len(cpus)} CPUs "
                         f"this process may use ({cpus}).")
    size, extra = divmod(len(cpus), parallel)
    shares, start = [], 0
    for slot in range(parallel):
        end = start + size + (slot < extra)
        shares.append(cpus[start:end])
        start = end
    return shares


def _launch(run: Run, log, cpus: Optional[Sequence[int]]) -> subprocess.Popen:
    """Starts `run` writing to `log`, pinned to `cpus` (None: unpinned, today's behaviour)."""
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    return subprocess.Popen([sys.executable, *run.argv], stdout=log, stderr=subprocess.STDOUT,
                            env=_subprocess_env(), preexec_fn=pin)


def _report(run: Run, name: str, code: int, log_path: str,
            num_train_steps: Optional[int]) -> bool:
    """Logs how `run` ended; True if it failed (or stopped before its final step)."""
    if code == 0 and not is_finished(run.workdir, _final_step(run, num_train_steps)):
        # main exits 0 after checkpointing on SIGTERM (preemption): resumable, not done.
        logging.error("%s stopped before its final step; re-run the sweep to resume it.", name)
        return True
    if code != 0:
        with open(log_path) as log:
            tail = log.read()[-2000:]
        logging.error("%s failed with exit code %d; end of %s:\n%s", name, code, log_path, tail)
        return True
    logging.info("%s: finished.", name)
    return False


def execute(runs: Sequence[Run], num_train_steps: Optional[int] = None,
            parallel: int = 1) -> List[Run]:
    """Runs the unfinished runs, `parallel` at a time in sweep order (logs in <run>/run.log);
    returns the failed ones.

    With `parallel` > 1 each slot is pinned to its own share of the CPUs (`cpu_shares`).
    A failing or interrupted run does not stop the sweep: the others still give a (partial)
    table.
    """
    shares = cpu_shares(parallel) if parallel > 1 else [None]
    pending = []
    for i, run in enumerate(runs, 1):
        name = f"[{i}/{len(runs)}] {run.variant} seed {run.seed}"
        if is_finished(run.workdir, _final_step(run, num_train_steps)):
            logging.info("%s: finished earlier, skipped.", name)
        else:
            pending.append((name, run))
    failed, running = [], {}  # Slot → (name, run, log file, process).
    while pending or running:
        for slot in [s for s in range(len(shares)) if s not in running][:len(pending)]:
            name, run = pending.pop(0)
            os.makedirs(run.workdir, exist_ok=True)
            log_path = os.path.join(run.workdir, "run.log")
            where = "" if shares[slot] is None else f" on CPUs {shares[slot]}"
            logging.info("%s: %s (log: %s)%s", name, command_line(run), log_path, where)
            log = open(log_path, "a")
            running[slot] = (name, run, log, _launch(run, log, shares[slot]))
        done = [s for s, entry in running.items() if entry[3].poll() is not None]
        if not done:
            time.sleep(_POLL_SECONDS)
        for slot in done:
            name, run, log, process = running.pop(slot)
            log.close()
            if _report(run, name, process.returncode, log.name, num_train_steps):
                failed.append(run)
    return sorted(failed, key=runs.index)


def run_sweep(config_path: str, sweep: str, workdir: str, seeds: int = 1,
              steps: Optional[int] = None, passthrough: Sequence[str] = (),
              variants: Optional[Sequence[str]] = None, dry_run: bool = False,
              num_train_steps: Optional[int] = None, parallel: int = 1) -> List[Run]:
    """Runs (or, with `dry_run`, prints) the sweep, then aggregates it; returns failed runs.

    `parallel`: runs at once, each pinned to its own share of the CPUs (`execute`).

    `num_train_steps`: the final step the runs must reach to count as finished (the config's,
    after overrides); by default each run's own config.json decides.
    """
    runs = build_runs(config_path, sweep, workdir, seeds, steps, passthrough, variants)
    if parallel > 1:
        cpu_shares(parallel)  # A bad --parallel fails before anything is written.
    expected = steps if steps is not None else num_train_steps
    if dry_run:
        pending = [run for run in runs
                   if not is_finished(run.workdir, _final_step(run, expected))]
        for run in pending:
            print(command_line(run))
        if len(pending) < len(runs):
            print(f"# {len(runs) - len(pending)} finished runs not listed.", file=sys.stderr)
        return []
    write_manifest(workdir, config_path, sweep, runs, passthrough)
    failed = execute(runs, expected, parallel)
    results.write_results(workdir)
    return failed


def _define_flags() -> None:
    """Flags are defined only when run as a program, so tests can import this module freely."""
    flags.DEFINE_enum("sweep", None, sorted(SWEEPS), "Which sweep to run.")
    flags.DEFINE_string("workdir", None, "Sweep directory; run k of variant v goes in v/seed_k.")
    flags.DEFINE_integer("seeds", 1, "Seeds 0 .. seeds-1 per variant.")
    flags.DEFINE_integer("steps", None, "num_train_steps of every run (default: the config's).")
    flags.DEFINE_list("variants", None, "Only these variants of the sweep (default: all).")
    flags.DEFINE_boolean("dry_run", False, "Print the commands instead of running them.")
    flags.DEFINE_integer("parallel", 1, "Runs at once, each pinned to its own share of the "
                         "CPUs (1: one run at a time on all of them).")
    config_flags.DEFINE_config_file("config", None, "Base training config, e.g. configs/voc.py.")
    flags.mark_flags_as_required(["sweep", "workdir", "config"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    config = FLAGS.config  # Parsed with the overrides: a bad key fails here, before any run.
    # A shipped config is recorded and passed on by name: the manifest stays portable.
    config_path = configs.name_of(FLAGS["config"].config_filename)
    try:
        failed = run_sweep(config_path, FLAGS.sweep, FLAGS.workdir, FLAGS.seeds, FLAGS.steps,
                           split_passthrough(sys.argv[1:]), FLAGS.variants, FLAGS.dry_run,
                           num_train_steps=config.num_train_steps, parallel=FLAGS.parallel)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if failed:
        sys.exit(f"{len(failed)} runs failed: " +
                 ", ".join(f"{run.variant}/seed_{run.seed}" for run in failed))


def run() -> None:
    _define_flags()
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
