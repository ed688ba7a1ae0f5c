"""Pools the Stanford Fig. 4 sweep over cross-validation folds and tests the adversarial term.

    python experiments/fold_analysis.py \\
        --study_dir=experiments/results/stanford_fig4_5fold \\
        [--fold0=experiments/results/stanford_fig4_fold0] [--num_folds=5] [--min_seeds=3]

Each fold is a committed sweep folder (`results.py --export_dir`): STUDY/foldK/ for K = 0 ..
num_folds - 1, with `--fold0` standing in for fold 0 when STUDY/fold0 is absent. Writes into
STUDY: results.md (per-fold and pooled tables), class_accuracy.png (pooled over folds, with the
paper's Fig. 4 points) and verdict.md (the adversarial − classical difference and its tests).

Why folds, not seeds, are the unit: seeds of one fold share its test images, so their spread
understates how much the effect varies with the data. The paired t-test and its interval treat
each fold's seed-mean difference as one observation; the permutation test shuffles the arm
labels among each fold's runs (fold × seed), which needs no normality but tests only "no
effect on any fold".
"""

import glob
import itertools
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
import numpy as np
from scipy import optimize
from scipy import stats

if __package__ in (None, ""):  # Run as a script: make `advseg_jax` and `experiments` importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advseg_jax import cli  # noqa: E402

if __package__ in (None, ""):
    from experiments import results  # noqa: E402
else:
    from . import results  # noqa: E402

ARMS = ("classical", "adversarial")  # The stanford_fig4 sweep's variants: reference first.
SPLITS = {"test": "eval", "train": "train"}  # Table name → results.curves' split name.
TABLE_METRICS = ("mean_class_accuracy", "mean_iou")
ALPHA = 0.05  # Two-sided level of the tests and 1 − the interval's coverage.
POWER = 0.8  # The power at which the minimal detectable effect is quoted.
# Label shuffles of the permutation test: exact when the fold × seed shuffles are fewer.
MAX_PERMUTATIONS = 100_000
PERMUTATION_SEED = 0

_FOLD_DIR = re.compile(r"^fold(\d+)$")


def find_folds(study_dir: str, fold0: Optional[str] = None) -> Dict[int, str]:
    """fold number → sweep folder; `fold0` is fold 0 unless the study has its own."""
    folds = {int(m.group(1)): path for path in glob.glob(os.path.join(study_dir, "fold*"))
             if (m := _FOLD_DIR.match(os.path.basename(path))) and os.path.isdir(path)}
    if fold0 and 0 not in folds:
        if not os.path.isdir(fold0):
            raise ValueError(f"--fold0={fold0} is not a directory.")
        folds[0] = fold0
    if not folds:
        raise ValueError(f"No fold folders (foldK/) in {study_dir} and no --fold0: export each "
                         "fold's sweep there with results.py --export_dir.")
    return dict(sorted(folds.items()))


def finished_seeds(fold_dir: str) -> Dict[str, int]:
    """arm → how many of its runs in the fold have finished (reached num_train_steps)."""
    return {arm: sum(results.load_run(path) is not None
                     for _, path in results.seed_dirs(fold_dir, arm))
            for arm in ARMS}


def fold_finals(fold_dir: str, revision: Optional[str] = None) -> dict:
    """arm → split → metric → per-seed values at the final step; and the fold's curves.

    `revision`: the code revision of runs without a revision.txt (`results.summarize`).
    """
    summary = results.summarize(fold_dir, revision)
    rows = {row["variant"]: row for row in summary["variants"]}
    missing = [arm for arm in ARMS if not rows.get(arm, {}).get("num_seeds")]
    if missing:
        raise ValueError(f"{fold_dir} has no finished runs of {missing}: a fold needs both arms "
                         f"of the stanford_fig4 sweep ({list(ARMS)}).")
    finals = {}
    for arm in ARMS:
        row, curves = rows[arm], summary["curves"][arm]
        final_train = curves["train"][-1] if curves.get("train") else None
        if final_train is None or final_train["step"] != row["steps"]:
            raise ValueError(f"{fold_dir}/{arm}: no evaluation of the training images at the "
                             f"final step {row['steps']}; the runs need "
                             "num_train_eval_examples > 0.")
        finals[arm] = {"test": {m: row[m]["values"] for m in TABLE_METRICS},
                       "train": {m: final_train[m]["values"] for m in TABLE_METRICS},
                       "epoch": final_train["epoch"]}
    return {"finals": finals, "curves": summary["curves"], "dataset": summary["dataset"],
            "revisions": summary["revisions"]}


def mean_std(values: Sequence[float]) -> dict:
    """Mean and sample std (ddof=1; None for one value)."""
    values = np.asarray(values, float)
    return {"mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else None, "n": len(values)}


def permutation_p_value(groups: Sequence[tuple]) -> dict:
    """Two-sided p of "the arm labels are exchangeable within each fold" for the statistic
    mean over folds of (mean adversarial − mean classical).

    `groups`: per fold, (classical values, adversarial values). Exact over every relabelling
    when there are at most MAX_PERMUTATIONS of them, else that many random ones (fixed seed).
    """
    pooled = [np.concatenate([np.asarray(c, float), np.asarray(a, float)]) for c, a in groups]
    sizes = [len(a) for _, a in groups]
    splits = [list(itertools.combinations(range(len(p)), k)) for p, k in zip(pooled, sizes)]

    def fold_difference(values, chosen):
        mask = np.zeros(len(values), bool)
        mask[list(chosen)] = True
        return values[mask].mean() - values[~mask].mean()

    # Per fold, the difference under each of its relabellings; the statistic averages folds.
    per_fold = [np.array([fold_difference(p, c) for c in s]) for p, s in zip(pooled, splits)]
    observed = np.mean([np.mean(a) - np.mean(c) for c, a in groups])
    total = math.prod(len(s) for s in splits)
    tolerance = 1e-12 * max(1.0, abs(observed))
    if total <= MAX_PERMUTATIONS:
        grids = np.meshgrid(*per_fold, indexing="ij")
        null = np.mean(grids, axis=0).ravel()
        p = float(np.mean(np.abs(null) >= abs(observed) - tolerance))
        return {"p": p, "permutations": total, "exact": True}
    rng = np.random.default_rng(PERMUTATION_SEED)
    null = np.mean([d[rng.integers(len(d), size=MAX_PERMUTATIONS)] for d in per_fold], axis=0)
    extreme = int(np.sum(np.abs(null) >= abs(observed) - tolerance))
    return {"p": (extreme + 1) / (MAX_PERMUTATIONS + 1), "permutations": MAX_PERMUTATIONS,
            "exact": False, "as_extreme": extreme}


def minimal_detectable_effect(sd: float, n: int, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """The true mean difference a two-sided paired t-test over `n` folds detects with `power`,
    if the fold differences scatter with sd `sd` (noncentral t, solved for the effect)."""
    df, critical = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def power_at(effect):
        shift = effect * math.sqrt(n) / sd
        # The far tail is negligible here, and scipy's nct.cdf returns NaN for some large shifts.
        return stats.nct.sf(critical, df, shift) + np.nan_to_num(
            stats.nct.cdf(-critical, df, shift))

    # Bracket: past the normal-approximation effect by a margin where the power is ~1.
    upper = (critical + stats.t.ppf(power, df) + 10) * sd / math.sqrt(n)
    return float(optimize.brentq(lambda e: power_at(e) - power, 0.0, upper))


def compare(folds: Dict[int, dict], split: str, metric: str = "mean_class_accuracy") -> dict:
    """adversarial − classical on `split`: per fold (seed means), over folds, and the tests."""
    groups = [(f["finals"]["classical"][split][metric], f["finals"]["adversarial"][split][metric])
              for f in folds.values()]
    differences = np.array([np.mean(a) - np.mean(c) for c, a in groups])
    result = {"per_fold": dict(zip(folds, differences.tolist())),
              "num_folds": len(differences), "permutation": permutation_p_value(groups)}
    result.update(paired_t(differences))
    if len(differences) > 1:
        result["mde"] = (minimal_detectable_effect(result["sd"], len(differences))
                         if result["sd"] > 0 else 0.0)
    return result


def paired_t(differences: Sequence[float]) -> dict:
    """Mean of paired differences; with 2 or more, their sd, 95 % t interval, t, df and
    two-sided p (one-sample t-test against 0)."""
    differences = np.asarray(differences, float)
    result = {"mean": float(differences.mean())}
    if len(differences) > 1:
        n, sd = len(differences), float(differences.std(ddof=1))
        half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)
        t = result["mean"] / (sd / math.sqrt(n)) if sd > 0 else math.copysign(math.inf,
                                                                            result["mean"])
        result.update(sd=sd, ci=(result["mean"] - half, result["mean"] + half), t=t, df=n - 1,
                      p=float(2 * stats.t.sf(abs(t), n - 1)))
    return result


def percent_text(stats_: dict) -> str:
    """"mean ± std" in % (the std left out for one value)."""
    std = "" if stats_["std"] is None else f" ± {100 * stats_['std']:.1f}"
    return f"{100 * stats_['mean']:.1f}{std}"


def tables(folds: Dict[int, dict]) -> List[str]:
    """Per-fold and pooled final scores (%), mean ± std over seeds (pooled: over fold × seed)."""
    header = ["| Fold | Arm | Seeds | Test class acc. | Test mIoU | Train class acc. "
              "| Train mIoU |", "|---|---|---|---|---|---|---|"]
    lines = header[:]
    pooled = {arm: {s: {m: [] for m in TABLE_METRICS} for s in SPLITS} for arm in ARMS}
    for number, fold in folds.items():
        for arm in ARMS:
            finals = fold["finals"][arm]
            cells = []
            for split in SPLITS:
                for metric in TABLE_METRICS:
                    cells.append(percent_text(mean_std(finals[split][metric])))
                    pooled[arm][split][metric] += finals[split][metric]
            seeds = len(finals["test"]["mean_class_accuracy"])
            lines.append(f"| {number} | {arm} | {seeds} | " + " | ".join(cells) + " |")
    pooled_lines = header[:]
    for arm in ARMS:
        cells = [percent_text(mean_std(pooled[arm][s][m])) for s in SPLITS for m in TABLE_METRICS]
        runs = len(pooled[arm]["test"]["mean_class_accuracy"])
        pooled_lines.append(f"| all {len(folds)} | {arm} | {runs} | " + " | ".join(cells) + " |")
    return (["## Per fold", "", "Mean ± std over seeds (ddof=1), in %, at the final evaluation.",
             ""] + lines + ["", "## Pooled", "",
                            "Mean ± std over every run of every fold (fold × seed), in %.", ""]
            + pooled_lines)


def pooled_curves(folds: Dict[int, dict]) -> dict:
    """results.curves' layout, with each point's values pooled over the runs of every fold at
    the steps all folds evaluated."""
    pooled = {}
    for arm in ARMS:
        pooled[arm] = {}
        for split in SPLITS.values():
            per_fold = [{p["step"]: p for p in f["curves"][arm][split]} for f in folds.values()]
            steps = sorted(set.intersection(*(set(p) for p in per_fold)))
            points = []
            for step in steps:
                point = {"step": step, "epoch": per_fold[0][step]["epoch"]}
                for metric in results.METRICS:
                    values = [v for p in per_fold for v in p[step][metric]["values"]]
                    stats_ = mean_std(values)
                    point[metric] = {"mean": stats_["mean"], "std": stats_["std"],
                                     "values": values}
                points.append(point)
            pooled[arm][split] = points
    return pooled


def p_text(p: float, digits: int) -> str:
    """A p value to `digits` decimals, or in scientific notation when it would read as zero
    (a sampled permutation p is never zero: its smallest value is 1 / (relabellings + 1))."""
    return f"{p:.{digits}f}" if p >= 10 ** -digits else f"{p:.1e}"


def _interval_text(result: dict) -> str:
    if result["num_folds"] < 2:
        return "no interval or paired t-test: they need at least 2 folds"
    low, high = result["ci"]
    return (f"mean over folds {100 * result['mean']:+.2f} points, 95 % t interval "
            f"[{100 * low:+.2f}, {100 * high:+.2f}], paired t({result['df']}) = "
            f"{result['t']:.2f}, p = {p_text(result['p'], 3)}")


def _pending_text(pending: Dict[int, Dict[str, int]], min_seeds: int) -> str:
    return "; ".join(f"fold {k} waits for its runs (finished: " + ", ".join(
        f"{arm} {n} of {min_seeds}" for arm, n in counts.items()) + ")"
                     for k, counts in pending.items())


def verdict(folds: Dict[int, dict], num_folds: int,
            pending: Optional[Dict[int, Dict[str, int]]] = None, min_seeds: int = 3) -> str:
    """verdict.md: the differences, the tests and the answer in words. `pending`: folds left
    out because an arm has fewer than `min_seeds` finished runs (fold → arm → finished)."""
    comparisons = {split: compare(folds, split) for split in SPLITS}
    complete = len(folds) >= num_folds
    lines = ["# Verdict: adversarial − classical, per-class accuracy at the final epoch", ""]
    if not complete:
        lines += [f"**Study incomplete: {len(folds)} of {num_folds} folds** "
                  f"({', '.join(map(str, folds))}). The numbers below are not the study's "
                  "result.", ""]
    if pending:
        lines += [f"Left out until every arm has {min_seeds} finished seeds: "
                  f"{_pending_text(pending, min_seeds)}.", ""]
    lines += ["Per fold: difference of the seed means (points of class accuracy).", "",
              "| Split | " + " | ".join(f"fold {k}" for k in folds) + " | Mean |",
              "|---|" + "---|" * (len(folds) + 1)]
    for split, result in comparisons.items():
        lines.append(f"| {split} | " + " | ".join(f"{100 * d:+.2f}"
                                                 for d in result["per_fold"].values())
                     + f" | {100 * result['mean']:+.2f} |")
    lines.append("")
    for split, result in comparisons.items():
        permutation = result["permutation"]
        kind = "exact" if permutation["exact"] else f"seed {PERMUTATION_SEED}"
        if permutation.get("as_extreme") == 0:
            kind += ", none as extreme as the observed difference"
        lines += [f"- **{split} images**: {_interval_text(result)}; permutation test over "
                  f"fold × seed p = {p_text(permutation['p'], 4)} "
                  f"({permutation['permutations']:,} relabellings, {kind})."]
    test = comparisons["test"]
    lines.append("")
    if "mde" in test:
        lines.append(f"Smallest test-accuracy effect this study detects with {POWER:.0%} power "
                     f"(two-sided α {ALPHA}, paired t over {test['num_folds']} folds, "
                     f"between-fold sd of differences {100 * test['sd']:.2f} points): "
                     f"{100 * test['mde']:.2f} points.")
    else:
        lines.append("No minimal detectable effect: it needs the between-fold spread, so at "
                     "least 2 folds.")
    lines += ["", "## In words", ""]
    for split, result in comparisons.items():
        lines.append("- " + _in_words(split, result))
        if "ci" in result:
            lines.append("- " + _paper_text(split, result))
    if not complete:
        lines.append(f"- With {len(folds)} of {num_folds} folds this is a preliminary reading, "
                     "not the study's answer.")
    return "\n".join(lines) + "\n"


def _in_words(split: str, result: dict) -> str:
    size = f"{100 * result['mean']:+.2f} points"
    if "p" not in result:
        p = result["permutation"]["p"]
        return (f"On the {split} images the adversarial term changes class accuracy by {size} "
                f"(one fold; permutation p = {p_text(p, 3)} over its seeds only).")
    significant = result["p"] < ALPHA
    low, high = (100 * v for v in result["ci"])
    if significant:
        direction = "raises" if result["mean"] > 0 else "lowers"
        return (f"On the {split} images the adversarial term {direction} class accuracy by "
                f"{100 * abs(result['mean']):.2f} points (95 % CI [{low:+.2f}, {high:+.2f}], "
                f"paired p = {p_text(result['p'], 3)}).")
    text = (f"On the {split} images no effect of the adversarial term is shown: {size}, 95 % CI "
            f"[{low:+.2f}, {high:+.2f}] (paired p = {p_text(result['p'], 3)})")
    if "mde" in result and split == "test":
        text += (f"; effects of {100 * result['mde']:.2f} points or more would have been "
                 f"detected with {POWER:.0%} power")
    return text + "."


def paper_differences(split: str) -> List[tuple]:
    """(epoch, adversarial − classical in points) from the paper's Fig. 4 as read into
    results.PAPER_CURVES, at the epochs past 0 where both arms have a point: the effect the
    paper reports, to set beside this study's interval."""
    curves = {arm: dict(results.PAPER_CURVES[("stanford_background", "stanford_fig4", arm)]
                        [SPLITS[split]]) for arm in ARMS}
    epochs = sorted((set(curves["classical"]) & set(curves["adversarial"])) - {0})
    return [(epoch, curves["adversarial"][epoch] - curves["classical"][epoch])
            for epoch in epochs]


def _paper_text(split: str, result: dict) -> str:
    low, high = (100 * v for v in result["ci"])
    readings = []
    for epoch, difference in paper_differences(split):
        place = ("inside the interval" if low <= difference <= high
                 else "above the interval" if difference > high else "below the interval")
        readings.append(f"{difference:+.1f} at epoch {epoch:,} ({place})")
    return (f"The paper's {split}-image differences (Fig. 4, one run each at full resolution, "
            f"values read by eye to about ±0.5): " + ", ".join(readings) + ". Where this "
            "study's protocol differs from the paper's (epochs, resolution, widths), they are a "
            "reference, not a like-for-like test.")


def write_study(study_dir: str, fold0: Optional[str] = None, num_folds: int = 5,
                revision: Optional[str] = None, min_seeds: int = 3) -> str:
    """Writes results.md, class_accuracy.png and verdict.md into `study_dir`; returns the
    verdict.

    A fold enters the analysis once each arm has `min_seeds` finished runs, so that finished
    runs of a fold still running can be committed at once without tilting the paired test
    towards whichever arm finished first; until then the fold is named as pending.
    """
    found = find_folds(study_dir, fold0)
    counts = {k: finished_seeds(path) for k, path in found.items()}
    pending = {k: c for k, c in counts.items() if min(c.values()) < min_seeds}
    fold_dirs = {k: path for k, path in found.items() if k not in pending}
    if not fold_dirs:
        raise ValueError(f"No fold in {study_dir} has {min_seeds} finished runs of each arm "
                         f"{list(ARMS)}: {_pending_text(pending, min_seeds)}. Lower "
                         "--min_seeds for a preliminary reading.")
    folds = {k: fold_finals(path, revision) for k, path in fold_dirs.items()}
    os.makedirs(study_dir, exist_ok=True)
    text = verdict(folds, num_folds, pending, min_seeds)
    with open(os.path.join(study_dir, "verdict.md"), "w") as f:
        f.write(text)
    epochs = {arm: fold["finals"][arm]["epoch"] for fold in folds.values() for arm in ARMS}
    revisions = sorted({r for fold in folds.values() for r in fold["revisions"]})
    status = (f"{len(folds)} of {num_folds} folds" +
              ("" if len(folds) >= num_folds else " — incomplete"))
    lines = [f"# Stanford Background, classical vs adversarial: {status}", "",
             "Folds: " + ", ".join(f"{k} ({path})" for k, path in fold_dirs.items()) + ". "
             f"Final evaluation at epoch {', '.join(sorted({str(e) for e in epochs.values()}))}. "
             f"Code revisions: {', '.join(revisions)}.", ""]
    lines += tables(folds)
    lines += ["", "![per-class accuracy](class_accuracy.png)", "",
              "Figure: per-class accuracy against epochs, mean ± std over every run of every "
              "fold; markers: the paper's Fig. 4 (full resolution, ~1000 epochs).", ""]
    lines += [text.replace("# Verdict", "## Verdict", 1)]
    with open(os.path.join(study_dir, "results.md"), "w") as f:
        f.write("\n".join(lines))
    first = next(iter(folds.values()))
    pooled_summary = {"variants": [{"variant": arm, "num_seeds": sum(
                          len(f["finals"][arm]["test"]["mean_class_accuracy"])
                          for f in folds.values()),
                                    "lambda_adv": 0.0 if arm == "classical" else None}
                                   for arm in ARMS],
                      "curves": pooled_curves(folds), "dataset": first["dataset"],
                      "sweep": "stanford_fig4"}
    results.plot_class_accuracy(pooled_summary, os.path.join(study_dir, "class_accuracy.png"))
    return text


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        text = write_study(flags.FLAGS.study_dir, flags.FLAGS.fold0, flags.FLAGS.num_folds,
                           flags.FLAGS.revision, flags.FLAGS.min_seeds)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    sys.stdout.write(text)


def run() -> None:
    flags.DEFINE_string("study_dir", None, "Folder holding fold0/ .. foldK/ sweep folders; the "
                        "outputs are written there.")
    flags.DEFINE_string("fold0", None, "Sweep folder used as fold 0 when study_dir has no "
                        "fold0/ (e.g. experiments/results/stanford_fig4_fold0).")
    flags.DEFINE_integer("num_folds", 5, "Folds of the full study; fewer found: incomplete.")
    flags.DEFINE_integer("min_seeds", 3, "Finished runs each arm of a fold needs to enter the "
                         "analysis; a fold with fewer is named as pending.")
    flags.DEFINE_string("revision", None, "Git revision of the code of runs that have no "
                        "revision.txt (they predate it).")
    flags.mark_flags_as_required(["study_dir"])
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
