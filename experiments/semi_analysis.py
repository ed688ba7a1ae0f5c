"""Issue 32's analysis: each self-training arm against the supervised one, paired by seed, and
what the selection curves say about which confidence picks right pixels.

    python experiments/semi_analysis.py \\
        --sweep_dir=experiments/results/stanford_semi_fold0 \\
        [--reference=supervised] [--arms=softmax_semi,adversarial_semi_rechosen] \\
        [--steps=900,3600]

Writes SWEEP/semi_analysis.md and prints it. verdict.md, written by a person, quotes it.

Why pair by seed: an arm's seed k starts from the reference's initialisation, labeled ids and
data order, and is the same loss until `semi_start_step`. So the per-seed difference removes
most of the seed-to-seed spread that each arm's own std carries, and that spread (the
reference's std) is the yardstick a gain is read against.

Why dominance, not matched coverage: at the thresholds worth using, the two criteria cover
ranges that barely overlap (in the Stanford adversarial pilot at step 900 the discriminator
selected 0.27 % of the pixels at T = 0.7, where the softmax's highest threshold, 0.99, still
selected 22 %), so precision at equal coverage would need extrapolation. A criterion's
operating point (coverage, precision) is dominated when the other criterion, in the same run
and evaluation, has a point that selects at least as many pixels at least as accurately, and
is better in one of the two; that needs no model of the curves between the grid's points.
"""

import os
import sys
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
import numpy as np

if __package__ in (None, ""):  # Run as a script: make `advseg_jax` and `experiments` importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advseg_jax import cli  # noqa: E402
from advseg_jax import workdir_io  # noqa: E402

if __package__ in (None, ""):
    from experiments import fold_analysis  # noqa: E402
    from experiments import results  # noqa: E402
else:
    from . import fold_analysis  # noqa: E402
    from . import results  # noqa: E402

OUTPUT = "semi_analysis.md"
# (record split, metric, row label) of the paired-gain table; "train" is the labeled images.
GAIN_ROWS = (("test", "mean_iou", "test fold, mIoU"),
             ("test", "mean_class_accuracy", "test fold, class acc."),
             ("test", "pixel_accuracy", "test fold, pixel acc."),
             ("train", "mean_iou", "labeled images, mIoU"),
             ("train", "mean_class_accuracy", "labeled images, class acc."))
CRITERIA = ("softmax", "discriminator")


def finished_runs(sweep_dir: str, arm: str) -> Dict[int, dict]:
    """seed → {dir, config, final records by split} of the arm's finished runs."""
    runs = {}
    for seed, run_dir in results.seed_dirs(sweep_dir, arm):
        run = results.load_run(run_dir)
        if not run:
            continue
        history = workdir_io.read_eval_history(run_dir)
        final_step = run["config"]["num_train_steps"]
        run["finals"] = {r["split"]: r for r in history if r["step"] == final_step}
        run["history"] = history
        runs[seed] = run
    return runs


def seed_std(runs: Dict[int, dict], split: str, metric: str) -> Optional[float]:
    """Sample std over the runs' final values (None for fewer than 2)."""
    values = [run["finals"][split][metric] for run in runs.values() if split in run["finals"]]
    return fold_analysis.mean_std(values)["std"] if values else None


def paired_gains(arm_runs: Dict[int, dict], reference_runs: Dict[int, dict], split: str,
                 metric: str) -> Optional[dict]:
    """arm − reference at the final step for the seeds both finished; None if none."""
    seeds = [s for s in arm_runs if s in reference_runs
             and split in arm_runs[s]["finals"] and split in reference_runs[s]["finals"]]
    if not seeds:
        return None
    differences = [arm_runs[s]["finals"][split][metric] - reference_runs[s]["finals"][split][metric]
                   for s in seeds]
    result = {"seeds": seeds, "differences": differences,
              "reference_std": seed_std(reference_runs, split, metric)}
    result.update(fold_analysis.paired_t(differences))
    return result


def curves_at(run: dict, step: int) -> Optional[dict]:
    """The run's selection_curves at `step`, None if it logged none there."""
    for record in run["history"]:
        if record["step"] == step and "selection_curves" in record:
            return record["selection_curves"]
    return None


def point_at(curves: dict, threshold: float) -> dict:
    """(coverage, precision) of one criterion's curves at a threshold of its grid."""
    thresholds = np.asarray(curves["thresholds"], float)
    hits = np.flatnonzero(np.isclose(thresholds, threshold))
    if not len(hits):
        raise ValueError(f"semi_threshold={threshold} is not in selection_curve_thresholds "
                         f"{curves['thresholds']}: add it to the config's grid to read the "
                         "arm's own operating point off its curves.")
    i = int(hits[0])
    return {"threshold": threshold, "coverage": curves["coverage"][i],
            "precision": curves["precision"][i]}


def dominating_point(point: dict, other: dict) -> Optional[dict]:
    """The other criterion's point with the most coverage among those that select at least as
    many pixels at least as accurately as `point`, and more or more accurately (None: no such
    point, or `point` selects nothing). Ties do not count: at the lowest threshold both
    criteria select every pixel with the same argmax."""
    if point["precision"] is None:
        return None
    best = None
    for threshold, coverage, precision in zip(other["thresholds"], other["coverage"],
                                              other["precision"]):
        if (precision is not None and coverage >= point["coverage"]
                and precision >= point["precision"]
                and (coverage, precision) != (point["coverage"], point["precision"])
                and (best is None or coverage > best["coverage"])):
            best = {"threshold": threshold, "coverage": coverage, "precision": precision}
    return best


def selection_summary(runs: Dict[int, dict], steps: Sequence[int]) -> List[dict]:
    """Per step and criterion, over seeds: the arm's operating point, the slice's overall
    accuracy (where the criterion's lowest threshold selects every pixel), and how many of the
    criterion's grid points the other criterion dominates (only where a run logged both)."""
    rows = []
    for step in steps:
        for criterion in CRITERIA:
            per_seed = []
            for seed, run in runs.items():
                curves = curves_at(run, step)
                if not curves or criterion not in curves:
                    continue
                mine = curves[criterion]
                lowest = point_at(mine, min(mine["thresholds"]))
                # Only a criterion whose lowest threshold selects every pixel gives the
                # segmentor's accuracy over the whole slice (softmax: its max is ≥ 1/C).
                entry = {"seed": seed, "all": lowest if lowest["coverage"] >= 1.0 else None}
                if run["config"].get("semi_selection") == criterion:
                    entry["chosen"] = point_at(mine, run["config"]["semi_threshold"])
                other = next((curves[c] for c in CRITERIA if c != criterion and c in curves),
                             None)
                if other:
                    points = [{"threshold": t, "coverage": c, "precision": p}
                              for t, c, p in zip(mine["thresholds"], mine["coverage"],
                                                 mine["precision"]) if p is not None]
                    entry["dominated"] = sum(dominating_point(p, other) is not None
                                             for p in points)
                    entry["points"] = len(points)
                    if "chosen" in entry:
                        entry["dominated_by"] = dominating_point(entry["chosen"], other)
                per_seed.append(entry)
            if per_seed:
                rows.append({"step": step, "criterion": criterion, "seeds": per_seed})
    return rows


def _pct(values: Sequence[Optional[float]]) -> str:
    values = [v for v in values if v is not None]
    return fold_analysis.percent_text(fold_analysis.mean_std(values)) if values else "—"


def _gain_cell(gain: Optional[dict]) -> str:
    if gain is None:
        return "—"
    per_seed = ", ".join(f"{100 * d:+.2f}" for d in gain["differences"])
    text = f"{100 * gain['mean']:+.2f} ({per_seed})"
    if "ci" in gain:
        low, high = (100 * v for v in gain["ci"])
        text += f"; [{low:+.2f}, {high:+.2f}], p {gain['p']:.2f}"
    return text


def gain_table(arms: Dict[str, Dict[int, dict]], reference: Dict[int, dict],
               reference_name: str) -> List[str]:
    lines = [f"| at the final step (points) | {reference_name} seed std | "
             + " | ".join(f"{arm} − {reference_name}" for arm in arms) + " |",
             "|---|---|" + "---|" * len(arms)]
    for split, metric, label in GAIN_ROWS:
        spread = seed_std(reference, split, metric)
        cells = [_gain_cell(paired_gains(runs, reference, split, metric))
                 for runs in arms.values()]
        spread_text = "—" if spread is None else f"{100 * spread:.2f}"
        lines.append(f"| {label} | {spread_text} | " + " | ".join(cells) + " |")
    return lines


def selection_table(rows: List[dict]) -> List[str]:
    lines = ["| step | criterion | seeds | slice accuracy, all pixels | at the arm's threshold: "
             "coverage | precision | grid points the other criterion dominates |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        seeds = row["seeds"]
        chosen = [s["chosen"] for s in seeds if "chosen" in s]
        threshold = f"T = {chosen[0]['threshold']}: " if chosen else ""
        dominated = [(s["dominated"], s["points"]) for s in seeds if "dominated" in s]
        dominated_text = (", ".join(f"{d}/{n}" for d, n in dominated) if dominated else "—")
        lines.append(
            f"| {row['step']} | {row['criterion']} | {len(seeds)} | "
            f"{_pct([s['all']['precision'] for s in seeds if s['all']])} | "
            f"{threshold}{_pct([c['coverage'] for c in chosen]) if chosen else '—'} | "
            f"{_pct([c['precision'] for c in chosen]) if chosen else '—'} | {dominated_text} |")
    beaten = [(row["step"], s["seed"], s["chosen"], s["dominated_by"]) for row in rows
              for s in row["seeds"] if s.get("dominated_by")]
    for step, seed, chosen, other in beaten:
        lines.append("")
        lines.append(f"- step {step}, seed {seed}: the arm's point (T = {chosen['threshold']}: "
                     f"{100 * chosen['coverage']:.2f} % of pixels, {100 * chosen['precision']:.1f}"
                     f" % right) is dominated by the other criterion at T = {other['threshold']}"
                     f" ({100 * other['coverage']:.2f} %, {100 * other['precision']:.1f} % right).")
    return lines


def analyse(sweep_dir: str, reference: str, arms: Sequence[str], steps: Sequence[int]) -> str:
    """The markdown of semi_analysis.md."""
    reference_runs = finished_runs(sweep_dir, reference)
    if not reference_runs:
        raise ValueError(f"{sweep_dir}/{reference} has no finished runs: --reference names "
                         "the arm each self-training arm is compared with.")
    arm_runs = {arm: finished_runs(sweep_dir, arm) for arm in arms}
    lines = [f"# Self-training arms against `{reference}`, paired by seed", "",
             f"Sweep: `{sweep_dir}`. Finished seeds: {reference} "
             f"{list(reference_runs)}; " + "; ".join(f"{a} {list(r)}"
                                                     for a, r in arm_runs.items()) + ".", "",
             "Each cell: mean of the per-seed differences (arm seed k − reference seed k) at "
             "the final evaluation, the differences in brackets, then with 2 or more seeds the "
             "95 % paired t interval and p. The reference's seed std is the yardstick.", ""]
    lines += gain_table(arm_runs, reference_runs, reference)
    lines += ["", "## What each criterion selects on the held-out slice", "",
              "Per evaluation step and criterion, mean ± std over seeds (%): the segmentor's "
              "accuracy over all of the slice's pixels, the arm's own operating point, and per "
              "seed how many of the criterion's grid points (with a selection) the other "
              "criterion dominates: selects at least as many pixels at least as accurately, "
              "and more or more accurately, in the same run and evaluation.", ""]
    for arm, runs in arm_runs.items():
        rows = selection_summary(runs, steps)
        lines += [f"### {arm}", ""]
        lines += selection_table(rows) if rows else [
            f"No finished run of {arm} logged selection_curves at steps {list(steps)}."]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    sweep_dir = flags.FLAGS.sweep_dir
    try:
        text = analyse(sweep_dir, flags.FLAGS.reference, flags.FLAGS.arms,
                       [int(s) for s in flags.FLAGS.steps])
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    with open(os.path.join(sweep_dir, OUTPUT), "w") as f:
        f.write(text)
    sys.stdout.write(text)


def run() -> None:
    flags.DEFINE_string("sweep_dir", None, "Committed sweep folder (results.py --export_dir) "
                        "holding <arm>/seed_<k> runs; semi_analysis.md is written there.")
    flags.DEFINE_string("reference", "supervised", "The arm every other arm is compared with.")
    flags.DEFINE_list("arms", ["softmax_semi", "adversarial_semi_rechosen"],
                      "Arms compared with the reference.")
    flags.DEFINE_list("steps", ["900", "3600"], "Evaluation steps whose selection curves are "
                      "summarised.")
    flags.mark_flags_as_required(["sweep_dir"])
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
