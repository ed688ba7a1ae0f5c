"""Chooses self-training thresholds on training images only (issue 32), by a rule fixed first.

The rule (docs/experiments.md, "The held-out slice and the rule"): at the run's
`semi_start_step`, for each criterion, the threshold of the largest coverage on the held-out
slice (`selection_curves_split`) whose selected pixels are at least as accurate as the
segmentor is on its labeled images at that step (the "train" evaluation record's pixel
accuracy). Coverage falls as the threshold rises, so that is the smallest qualifying threshold.
The test fold is never read: only the run's own eval_history.jsonl.

    python -m experiments.choose_semi_threshold --workdir=RUN_DIR [--step=900]
"""

import sys
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags

from advseg_jax import cli
from advseg_jax import workdir_io


def choose(curves: dict, target: float) -> Optional[dict]:
    """{threshold, coverage, precision} of the largest coverage with precision >= target."""
    qualifying = [(c, t, p) for t, c, p in zip(curves["thresholds"], curves["coverage"],
                                               curves["precision"])
                  if p is not None and p >= target]
    if not qualifying:
        return None
    coverage, threshold, precision = max(qualifying, key=lambda x: (x[0], -x[1]))
    return {"threshold": threshold, "coverage": coverage, "precision": precision}


def choose_for_run(records: List[dict], step: int, eval_split: str) -> Dict[str, Optional[dict]]:
    """Each criterion's choice at `step`, plus the target it had to reach."""
    at_step = {r["split"]: r for r in records if r["step"] == step}
    if "train" not in at_step or "selection_curves" not in at_step.get(eval_split, {}):
        raise ValueError(f"No evaluation at step {step} with both a 'train' record (set "
                         "config.num_train_eval_examples) and selection_curves (set "
                         "config.selection_curves_split); steps evaluated: "
                         f"{sorted({r['step'] for r in records})}.")
    target = at_step["train"]["pixel_accuracy"]
    choices = {name: choose(curves, target)
               for name, curves in at_step[eval_split]["selection_curves"].items()}
    return {"target_pixel_accuracy": target, **choices}


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    workdir = flags.FLAGS.workdir
    config = workdir_io.read_config(workdir)
    if config is None:
        raise app.UsageError(f"--workdir={workdir} holds no config.json: not a run directory.")
    step = flags.FLAGS.step if flags.FLAGS.step is not None else config["semi_start_step"]
    result = choose_for_run(workdir_io.read_eval_history(workdir), step, config["eval_split"])
    lines = [f"step {step}: target = labeled pixel accuracy "
             f"{result.pop('target_pixel_accuracy'):.4f} "
             f"(held-out slice {config['selection_curves_split']!r})"]
    for name, choice in result.items():
        lines.append(f"{name}: " + ("no threshold reaches the target" if choice is None else
                                    f"threshold {choice['threshold']:g} (coverage "
                                    f"{choice['coverage']:.4f}, precision "
                                    f"{choice['precision']:.4f})"))
    sys.stdout.write("\n".join(lines) + "\n")


def run() -> None:
    flags.DEFINE_string("workdir", None, "A run directory (config.json, eval_history.jsonl).")
    flags.DEFINE_integer("step", None, "Evaluation step to read; default: semi_start_step.")
    flags.mark_flags_as_required(["workdir"])
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
