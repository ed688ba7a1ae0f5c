"""Aggregates a sweep directory into results.md, results.json and PNG plots.

    python experiments/results.py --workdir=DIR

Installed, the same flags work as the `advseg-results` console script.

DIR holds DIR/<variant>/seed_<k>/ training runs (`experiments/ablations.py` makes them). Only
finished runs count (last evaluation at the final step), so a table made while a sweep is still
running never mixes a half-trained seed into a mean. Std is over seeds with ddof=1 (the sample
std: an estimate of the seed-to-seed spread, not the spread of these few seeds); with one seed
it is undefined and reported as null / left out.
"""

import glob
import json
import math
import os
import re
import shlex
import shutil
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if __package__ in (None, ""):  # Run as a script: make `advseg_jax` importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advseg_jax import cli  # noqa: E402
from advseg_jax import dicts  # noqa: E402
from advseg_jax import workdir_io  # noqa: E402

if __package__ in (None, ""):
    from experiments import run_segments  # noqa: E402
else:
    from . import run_segments  # noqa: E402

METRICS = ("mean_iou", "pixel_accuracy", "mean_class_accuracy")
_LABELS = {"mean_iou": "mIoU", "pixel_accuracy": "Pixel acc.", "mean_class_accuracy": "Class acc."}

# Published numbers, in %, keyed by (dataset family, sweep, variant): Luc, Couprie, Chintala
# and Verbeek, "Semantic Segmentation using Adversarial Networks", NIPS 2016 Workshop on
# Adversarial Training, arXiv:1611.08408. Only values read from the paper belong here. Stanford
# Background: per-class accuracy on the validation (test) images at ~epoch 1000, read by eye from
# Fig. 4 (about ±0.5; full resolution, the paper's own λ and schedule). The embedded digit_scenes
# data has no published numbers at all.
PAPER_RESULTS: Dict[tuple, Dict[str, float]] = {
    ("stanford_background", "stanford_fig4", "classical"): {"mean_class_accuracy": 62.1},
    ("stanford_background", "stanford_fig4", "adversarial"): {"mean_class_accuracy": 63.4},
}
# Fig. 4 of the paper, the same reading: per-class accuracy (%) at (epoch, value) points.
PAPER_CURVES: Dict[tuple, Dict[str, List[tuple]]] = {
    ("stanford_background", "stanford_fig4", "classical"): {
        "train": [(100, 85.0), (300, 88.7), (1000, 91.5)],
        "eval": [(0, 57.6), (100, 63.0), (300, 62.8), (1000, 62.1)]},
    ("stanford_background", "stanford_fig4", "adversarial"): {
        "train": [(100, 76.0), (300, 82.0), (1000, 86.7)],
        "eval": [(0, 55.6), (100, 64.5), (300, 66.3), (1000, 63.4)]},
}
# Files a person writes into a sweep directory; results.md includes it verbatim.
VERDICT = "verdict.md"
# Flags whose values are paths on one machine: results.json shows them as placeholders.
_PLACEHOLDERS = {"data_dir": "DATA_DIR", "manual_dir": "MANUAL_DIR"}

_SEED_DIR = re.compile(r"^seed_(\d+)$")


def load_run(run_dir: str) -> Optional[dict]:
    """{config, final} of a finished run, None if it is missing or unfinished."""
    try:
        config = workdir_io.read_config(run_dir)
        final = workdir_io.read_eval_results(run_dir)
    except (OSError, ValueError):
        return None
    if config is None or final.get("step") != config.get("num_train_steps"):
        return None
    return {"dir": run_dir, "config": config, "final": final}


def seed_dirs(workdir: str, variant: str) -> List[Tuple[int, str]]:
    """(seed, run directory) of each `<variant>/seed_<k>` in the sweep, by seed."""
    return sorted((int(m.group(1)), path)
                  for path in glob.glob(os.path.join(workdir, variant, "seed_*"))
                  if (m := _SEED_DIR.match(os.path.basename(path))))


def _variant_order(workdir: str, manifest: Optional[dict]) -> List[str]:
    found = sorted(name for name in os.listdir(workdir)
                   if glob.glob(os.path.join(workdir, name, "seed_*")))
    if not manifest:
        return found
    listed = list(manifest["variants"])
    return listed + [name for name in found if name not in listed]


def _stats(values: Sequence[float]) -> dict:
    """mean and sample std over seeds, NaN scores (a class-free split) left out."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    mean = float(np.mean(finite)) if finite else None
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return {"mean": mean, "std": std, "values": [None if v is None else float(v) for v in values]}


def differing_keys(configs: Sequence[dict], expected: Sequence[str]) -> List[str]:
    """Config keys that vary across runs but should not: not swept, not seed, not a path.

    Runs of a sweep made with different code or config files (an edited default, a changed
    passthrough on resume) would otherwise be compared as if only the swept key differed.
    """
    flat = [dicts.flatten(config) for config in configs]
    keys = set().union(*flat) - set(expected) - {"seed", "data_dir"}
    return sorted(k for k in keys if len({json.dumps(c.get(k)) for c in flat}) > 1)


def key_values(configs: Sequence[dict], key: str) -> Dict[str, int]:
    """{value as JSON (or "absent"): number of runs} of flattened `key` over `configs`.

    "absent" marks runs whose config.json predates the key (code that did not have it yet).
    """
    counts: Dict[str, int] = {}
    for config in configs:
        flat = dicts.flatten(config)
        value = json.dumps(flat[key]) if key in flat else "absent"
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def run_revisions(run_dirs: Sequence[str], revision: Optional[str] = None) -> List[str]:
    """The code revisions the runs used: each run's revision.txt, else `revision` (for runs that
    predate the file), else "unrecorded". Warns when the runs do not all share one revision:
    runs of different code may not be pooled as if only the swept key differed."""
    found = set()
    for run_dir in run_dirs:
        own = workdir_io.read_revisions(run_dir)
        if own and revision and own != [revision]:
            logging.warning("%s ran %s, not --revision=%s: keeping its own record.", run_dir,
                            own, revision)
        found.update(own or [revision or "unrecorded"])
    if len(found) > 1:
        logging.warning("The runs used %d code revisions: %s. Check they give the same results "
                        "(or re-run on one) before pooling them.", len(found), sorted(found))
    return sorted(found)


def summarize(workdir: str, revision: Optional[str] = None) -> dict:
    """The content of results.json: one entry per variant with per-metric mean/std over seeds.

    `revision`: the code revision of runs whose workdir has no revision.txt (older runs).
    """
    manifest = workdir_io.read_manifest(workdir)
    rows, dataset, configs, run_dirs = [], None, [], []
    for variant in _variant_order(workdir, manifest):
        runs = [(seed, load_run(path)) for seed, path in seed_dirs(workdir, variant)]
        finished = [(seed, run) for seed, run in runs if run is not None]
        row = {"variant": variant,
               "overrides": (manifest or {}).get("variants", {}).get(variant),
               "seeds": [seed for seed, _ in finished], "num_seeds": len(finished),
               "unfinished_seeds": [seed for seed, run in runs if run is None]}
        configs += [run["config"] for _, run in finished]
        run_dirs += [run["dir"] for _, run in finished]
        if finished:
            config = finished[0][1]["config"]
            dataset = dataset or config.get("dataset")
            row.update(dataset=config.get("dataset"), lambda_adv=config.get("lambda_adv"),
                       steps=config.get("num_train_steps"))
        for metric in METRICS:
            row[metric] = _stats([run["final"].get(metric) for _, run in finished])
        row["per_class_iou"] = _per_class_stats([run["final"] for _, run in finished])
        sweep = (manifest or {}).get("sweep")
        row["paper"] = PAPER_RESULTS.get(_paper_key(row.get("dataset"), sweep, variant))
        rows.append(row)
    swept = [key for overrides in (manifest or {}).get("variants", {}).values()
             for key in overrides]
    revisions = run_revisions(run_dirs, revision)
    # The directory's name, not its path: results.json gets copied and committed.
    summary = {"name": os.path.basename(os.path.abspath(workdir)),
               "sweep": (manifest or {}).get("sweep"), "config": (manifest or {}).get("config"),
               "passthrough": [_placeholder(f) for f in (manifest or {}).get("passthrough", [])],
               "dataset": dataset,
               "std": "sample std over seeds (ddof=1)", "variants": rows,
               "revisions": revisions,
               "revision": (revisions[0] if len(revisions) == 1 and revisions != ["unrecorded"]
                            else None),
               "differing_config_keys": differing_keys(configs, swept),
               "differing_config_values": {key: key_values(configs, key)
                                           for key in differing_keys(configs, swept)},
               "curves": curves(workdir, rows)}
    if manifest and manifest.get("config"):
        summary["recipe"] = recipe(manifest)
    return summary


def _placeholder(flag: str) -> str:
    key, _, _ = flag.partition("=")
    name = key.rsplit(".", 1)[-1]
    return f"{key}={_PLACEHOLDERS[name]}" if name in _PLACEHOLDERS and "=" in flag else flag


def format_value(value: Any) -> str:
    """A value as `config_flags` parses it back (tuples as '(a,b)', floats with a dot)."""
    if isinstance(value, (tuple, list)):
        trailing = "," if len(value) == 1 else ""
        return "(" + ",".join(format_value(v) for v in value) + trailing + ")"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def override_flags(overrides: Dict[str, Any]) -> List[str]:
    """`--config.KEY=VALUE` flags of a variant's overrides (the runner's and the recipe's)."""
    return [f"--config.{key}={format_value(value)}" for key, value in overrides.items()]


def recipe(manifest: dict) -> dict:
    """How to re-run any seed of the sweep: the runner's command, machine paths as placeholders.

    `experiments/ablations.py` rebuilds every run's exact `advseg_jax.main` command from these
    (config file, passthrough, the variant's overrides, `--config.seed=k`); `--variants` and
    `--seeds` pick a subset (seeds 0 .. N-1).
    """
    passthrough = [_placeholder(flag) for flag in manifest.get("passthrough", [])]
    command = ["python", "experiments/ablations.py", f"--config={manifest['config']}",
               f"--sweep={manifest['sweep']}", "--workdir=OUT",
               f"--seeds={len(manifest['seeds'])}", *passthrough]
    # One run alone, as the runner launches it: replace SEED (and OUT) in the variant's command.
    runs = {variant: " ".join(shlex.quote(c) for c in [
        "python", "-m", "advseg_jax.main", f"--config={manifest['config']}",
        f"--workdir=OUT/{variant}/seed_SEED", *passthrough, *override_flags(overrides),
        "--config.seed=SEED"]) for variant, overrides in manifest["variants"].items()}
    return {"config": manifest["config"], "sweep": manifest["sweep"],
            "passthrough": passthrough, "variants": manifest["variants"],
            "seeds": manifest["seeds"], "command": " ".join(shlex.quote(c) for c in command),
            "run_commands": runs}


def _per_class_stats(finals: Sequence[dict]) -> Optional[Dict[str, dict]]:
    """{class name: stats of its IoU over seeds}, None if the runs predate class names (or have
    different ones, which would make the columns meaningless)."""
    names = {tuple(final.get("class_names") or ()) for final in finals}
    if len(names) != 1 or not next(iter(names)):
        return None
    (names,) = names
    return {name: _stats([final["per_class_iou"][i] for final in finals])
            for i, name in enumerate(names)}


def per_class_markdown(summary: dict) -> List[str]:
    """Per-class IoU per variant (mean ± std over seeds, in %), columns named by class."""
    rows = [row for row in summary["variants"] if row.get("per_class_iou")]
    if not rows:
        return []
    names = list(rows[0]["per_class_iou"])
    lines = ["", "Per-class IoU (%), mean ± std over seeds:", "",
             "| Variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in rows:
        cells = [_percent(row["per_class_iou"][name]) if name in row["per_class_iou"] else "—"
                 for name in names]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return lines


def _percent(stats: dict) -> str:
    if stats["mean"] is None:
        return "—"
    text = f"{100 * stats['mean']:.1f}"
    return text if stats["std"] is None else f"{text} ± {100 * stats['std']:.1f}"


def _overrides_text(overrides: Optional[dict]) -> str:
    if not overrides:
        return "—"
    return ", ".join(f"`{key}={value}`" for key, value in overrides.items())


def _paper_text(paper: Optional[dict]) -> str:
    if not paper:
        return "—"
    return ", ".join(f"{_LABELS[m]} {paper[m]:.1f}" for m in METRICS if m in paper)


def _final_train(summary: dict, variant: str, metric: str) -> Optional[dict]:
    points = summary["curves"].get(variant, {}).get("train")
    return points[-1][metric] if points else None


def markdown(summary: dict) -> str:
    """Final scores (mean ± std over seeds, %), curves by epoch, effect sizes and the verdict."""
    title = f"# Sweep `{summary['sweep'] or summary['name']}`"
    has_train = any(summary["curves"].get(row["variant"], {}).get("train")
                    for row in summary["variants"])
    train_header = " Train class acc. |" if has_train else ""
    lines = [title, "",
             f"Dataset: {summary['dataset'] or '—'}. Mean ± {summary['std']}, in %, of each "
             "run's final evaluation on the evaluation split"
             + (" (and on the training images, unaugmented)" if has_train else "") + ".", "",
             f"| Variant | Overrides | mIoU | Pixel acc. | Class acc. |{train_header} Seeds "
             "| Paper |",
             "|---|---|---|---|---|" + ("---|" if has_train else "") + "---|---|"]
    for row in summary["variants"]:
        seeds = str(row["num_seeds"])
        if row["unfinished_seeds"]:
            seeds += f" (+{len(row['unfinished_seeds'])} unfinished)"
        train = ""
        if has_train:
            stats = _final_train(summary, row["variant"], "mean_class_accuracy")
            train = f" {_percent(stats) if stats else '—'} |"
        lines.append(f"| {row['variant']} | {_overrides_text(row['overrides'])} | "
                     f"{_percent(row['mean_iou'])} | {_percent(row['pixel_accuracy'])} | "
                     f"{_percent(row['mean_class_accuracy'])} |{train} {seeds} | "
                     f"{_paper_text(row['paper'])} |")
    lines += per_class_markdown(summary)
    steps = sorted({row["steps"] for row in summary["variants"] if row.get("steps")})
    if steps:
        lines += ["", f"Training steps per run: {', '.join(map(str, steps))}."]
    if summary.get("revisions"):
        lines += ["", "Code revision" + ("s (the runs differ)" if len(summary["revisions"]) > 1
                                         else "") + ": " + ", ".join(summary["revisions"]) + "."]
    if any(row["paper"] for row in summary["variants"]):
        lines += ["", "Paper: Luc et al. 2016, read from Fig. 4 (per-class accuracy on the "
                  "validation images at ~epoch 1000, ±0.5; full resolution, their λ and "
                  "schedule): a reference point, not a like-for-like target."]
    lines += _curve_table(summary) + _effects(summary)
    if summary.get("differing_config_keys"):
        values = summary.get("differing_config_values", {})

        def described(key):
            counts = values.get(key)
            if not counts:
                return f"`{key}`"
            return f"`{key}` (" + "; ".join(
                f"{value} in {n} run{'s' if n > 1 else ''}" for value, n in counts.items()) + ")"

        lines += ["", "**Warning:** the runs also differ in " +
                  ", ".join(described(key) for key in summary["differing_config_keys"]) +
                  " (see each run's config.json; \"absent\": the run's code predates the key)."]
    if summary.get("config"):
        extra = " ".join(f"`{flag}`" for flag in summary["passthrough"]) or "none"
        lines += ["", f"Base config: `{summary['config']}`; overrides for every run: {extra}."]
    if summary.get("recipe"):
        lines += ["", f"Re-run the sweep: `{summary['recipe']['command']}`. One run alone "
                  "(any seed): results.json `recipe.run_commands[variant]` with SEED set."]
    if summary.get("verdict"):
        lines += ["", summary["verdict"].strip()]
    return "\n".join(lines) + "\n"


def _curve_table(summary: dict, metric: str = "mean_class_accuracy") -> List[str]:
    """Class accuracy at every evaluation, train and evaluation split side by side."""
    variants = [v for v, splits in summary["curves"].items() if splits.get("eval")]
    if not variants:
        return []
    header = "| Epoch | " + " | ".join(f"{v} train | {v} eval" for v in variants) + " |"
    lines = ["", f"{_LABELS[metric]} (%) at each evaluation, mean ± std over seeds:", "",
             header, "|---|" + "---|---|" * len(variants)]
    first = summary["curves"][variants[0]]["eval"]
    for i, point in enumerate(first):
        cells = []
        for v in variants:
            for split in ("train", "eval"):
                points = summary["curves"][v].get(split) or []
                cells.append(_percent(points[i][metric]) if i < len(points) else "—")
        x = f"{point['epoch']:.1f}" if point["epoch"] is not None else f"step {point['step']}"
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    return lines


def _effects(summary: dict, metric: str = "mean_class_accuracy") -> List[str]:
    """Each variant minus the baseline (lambda_adv = 0) at the final evaluation, in points."""
    rows = {row["variant"]: row for row in summary["variants"] if row["num_seeds"]}
    base = next((v for v, row in rows.items() if row.get("lambda_adv") == 0), None)
    if base is None or len(rows) < 2:
        return []
    lines = ["", f"Effect at the final evaluation, {_LABELS[metric]}, variant − {base} "
             "(difference of seed means, in points; each arm's seed std in brackets):", ""]
    for variant in rows:
        if variant == base:
            continue
        parts = []
        for name, pick in (("eval", lambda v: rows[v][metric]),
                           ("train", lambda v: _final_train(summary, v, metric))):
            a, b = pick(variant), pick(base)
            if a and b and a["mean"] is not None and b["mean"] is not None:
                spread = "/".join("—" if x["std"] is None else f"{100 * x['std']:.1f}"
                                  for x in (a, b))
                parts.append(f"{name} {100 * (a['mean'] - b['mean']):+.1f} ({spread})")
        lines.append(f"- {variant}: " + "; ".join(parts))
    return lines


def plot_bars(summary: dict, path: str) -> None:
    """mIoU per variant, mean ± std over seeds (the sweep's headline comparison)."""
    rows = [row for row in summary["variants"] if row["mean_iou"]["mean"] is not None]
    fig, ax = plt.subplots(figsize=(1.4 * max(len(rows), 2) + 1.5, 3.5))
    x = np.arange(len(rows))
    means = [100 * row["mean_iou"]["mean"] for row in rows]
    errors = [100 * (row["mean_iou"]["std"] or 0.0) for row in rows]
    colours = ["0.4" if row.get("lambda_adv") == 0 else "C0" for row in rows]
    ax.bar(x, means, yerr=errors, capsize=4, color=colours)
    for i, row in enumerate(rows):
        ax.annotate(f"n={row['num_seeds']}", (x[i], 0), ha="center", va="bottom",
                    textcoords="offset points", xytext=(0, 3), fontsize=8, color="w")
        if row["paper"] and "mean_iou" in row["paper"]:
            ax.plot(x[i], row["paper"]["mean_iou"], "r_", markersize=20, label="paper")
    ax.set_xticks(x, [row["variant"] for row in rows], rotation=20)
    ax.set_ylabel("validation mIoU (%)")
    ax.set_title(f"{summary['sweep'] or 'sweep'}: mean ± std over seeds")
    ax.set_ylim(0, None)  # Bars from 0: a cut axis would magnify small differences.
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _curves(run_dirs: Sequence[str], split: str, metric: str):
    """Steps, epochs and a [seeds, steps] array of `metric` at the steps all runs evaluated.

    Epochs come from the records (train.py writes them); older records without one give NaN.
    """
    series, epochs = [], {}
    for run_dir in run_dirs:
        records = [r for r in workdir_io.read_eval_history(run_dir)
                   if r["split"] == split and r.get(metric) is not None]
        series.append({r["step"]: r[metric] for r in records})
        epochs.update({r["step"]: r.get("epoch", math.nan) for r in records})
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return (np.array(steps), np.array([epochs[step] for step in steps], float),
            np.array([[s[step] for step in steps] for s in series]))


def curves(workdir: str, rows: Sequence[dict]) -> Dict[str, Dict[str, List[dict]]]:
    """variant → split ("train" / "eval") → per evaluation: step, epoch, mean/std per metric."""
    table = {}
    for row in rows:
        if not row["num_seeds"]:
            continue
        run_dirs = [os.path.join(workdir, row["variant"], f"seed_{s}") for s in row["seeds"]]
        eval_split = load_run(run_dirs[0])["config"]["eval_split"]
        table[row["variant"]] = {}
        # train.py records the train-split evaluation under split "train".
        for name, split in (("train", "train"), ("eval", eval_split)):
            points = []
            for metric in METRICS:
                steps, epochs, values = _curves(run_dirs, split, metric)
                for i, step in enumerate(steps):
                    if len(points) <= i:
                        points.append({"step": int(step), "epoch": None if math.isnan(epochs[i])
                                       else round(float(epochs[i]), 3)})
                    points[i][metric] = _stats(values[:, i].tolist())
            table[row["variant"]][name] = points
    return table


def _paper_key(dataset: Optional[str], sweep: Optional[str], variant: str) -> tuple:
    """Published values are per dataset family: every Stanford fold shares the paper's."""
    return ((dataset or "").split("/")[0], sweep, variant)


def line_colours(rows: Sequence[dict]) -> List[str]:
    """Black for the baseline (the first variant with lambda_adv = 0), matplotlib's cycle for
    the rest: a sweep can hold several λ = 0 arms (supervised and softmax self-training), and
    each line must stay tellable apart."""
    baseline = next((i for i, row in enumerate(rows) if row.get("lambda_adv") == 0), None)
    return ["k" if i == baseline else f"C{i}" for i in range(len(rows))]


def plot_class_accuracy(summary: dict, path: str, metric: str = "mean_class_accuracy") -> None:
    """Per-class accuracy on training and evaluation images against epochs (Luc et al., Fig. 4).

    The paper's point: the adversarial term fits the training set less and generalises a little
    better. Lines are the mean over seeds, bands ± std; the baseline (lambda_adv = 0) is black.
    The paper's own points (full resolution, ~1000 epochs) are drawn as markers on the same
    symlog epoch axis, so runs of a few tens of epochs and the paper's stay readable together.
    """
    rows = summary["variants"]  # Variants without a finished run still get the paper's points.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    use_epochs = all(point["epoch"] is not None for splits in summary["curves"].values()
                     for points in splits.values() for point in points)
    for row, colour in zip(rows, line_colours(rows)):
        for ax, split in zip(axes, ("train", "eval")):
            points = summary["curves"].get(row["variant"], {}).get(split)
            if points:
                x = np.array([p["epoch" if use_epochs else "step"] for p in points], float)
                mean = np.array([100 * p[metric]["mean"] for p in points])
                ax.plot(x, mean, color=colour, label=f"{row['variant']} (n={row['num_seeds']})")
                std = [p[metric]["std"] for p in points]
                if all(v is not None for v in std):
                    std = 100 * np.array(std)
                    ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15)
            key = _paper_key(summary.get("dataset"), summary.get("sweep"), row["variant"])
            paper = PAPER_CURVES.get(key, {}).get(split)
            if paper and use_epochs and metric == "mean_class_accuracy":
                ax.plot(*zip(*paper), linestyle="none", marker="s" if colour == "k" else "^",
                        color=colour, markerfacecolor="none", clip_on=False,
                        label=f"paper, {row['variant']} (Fig. 4; full res.)")
    for ax, title in zip(axes, ("training images (no augmentation)", "evaluation images")):
        ax.set_title(title)
        ax.set_xlabel("epoch" if use_epochs else "step")
        if use_epochs:
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(left=0)
            right = ax.get_xlim()[1]
            ticks = [t for t in (0, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= right]
            ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{_LABELS.get(metric, metric)} (%)")
    axes[1].legend(fontsize=7)
    fig.suptitle("Per-class accuracy during training: mean ± std over seeds "
                 "(cf. Luc et al. 2016, Fig. 4)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_eval_curves(summary: dict, path: str) -> None:
    """Evaluation-split mIoU and per-class accuracy against steps, per variant, mean ± std.

    Steps, not epochs: arms that add unlabeled images see as many labeled batches per step as
    the supervised arm, so a step is the unit they share.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for row, colour in zip(summary["variants"], line_colours(summary["variants"])):
        points = summary["curves"].get(row["variant"], {}).get("eval")
        if not points:
            continue
        steps = np.array([p["step"] for p in points], float)
        for ax, metric in zip(axes, ("mean_iou", "mean_class_accuracy")):
            mean = np.array([100 * p[metric]["mean"] for p in points])
            ax.plot(steps, mean, color=colour, marker=".",
                    label=f"{row['variant']} (n={row['num_seeds']})")
            std = [p[metric]["std"] for p in points]
            if all(v is not None for v in std):
                std = 100 * np.array(std)
                ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.15)
    for ax, metric in zip(axes, ("mean_iou", "mean_class_accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(f"{_LABELS.get(metric, metric)} (%)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("Evaluation split during training: mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _selection_curves_at(run_dirs: Sequence[str], step: int) -> Dict[str, dict]:
    """Each criterion's curves at `step`, averaged over the runs that logged them (a precision
    of an empty selection, null, is left out of its threshold's mean)."""
    per_criterion: Dict[str, List[dict]] = {}
    for run_dir in run_dirs:
        for record in workdir_io.read_eval_history(run_dir):
            if record["step"] == step and "selection_curves" in record:
                for name, curves in record["selection_curves"].items():
                    per_criterion.setdefault(name, []).append(curves)
    averaged = {}
    for name, runs in per_criterion.items():
        precision = np.array([[np.nan if p is None else p for p in c["precision"]] for c in runs])
        with warnings.catch_warnings():  # A threshold no run selected at: NaN, as meant.
            warnings.simplefilter("ignore", RuntimeWarning)
            averaged[name] = {"coverage": np.mean([c["coverage"] for c in runs], axis=0),
                              "precision": np.nanmean(precision, axis=0), "runs": len(runs)}
    return averaged


def plot_selection_curves(workdir: str, steps: Sequence[int], path: str) -> List[str]:
    """Precision against coverage of each self-training criterion, one panel per arm, one line
    per (criterion, step), mean over seeds: which confidence picks right pixels (issue 32).

    Arms whose runs logged no curves (committed before the curves existed) get no panel, so the
    figure shows what was measured; returns the arms drawn (none: no figure is written).
    """
    panels = []
    for variant in _variant_order(workdir, workdir_io.read_manifest(workdir)):
        run_dirs = sorted(glob.glob(os.path.join(workdir, variant, "seed_*")))
        lines = [(j, step, name, curves) for j, step in enumerate(steps)
                 for name, curves in _selection_curves_at(run_dirs, step).items()]
        if lines:
            panels.append((variant, lines))
    if not panels:
        logging.warning("No run in %s logged selection_curves at steps %s: no %s.", workdir,
                        list(steps), path)
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (variant, lines) in zip(axes[0], panels):
        for j, step, name, curves in lines:
            ax.plot(100 * curves["coverage"], 100 * curves["precision"], marker=".",
                    linestyle="-" if name == "softmax" else "--", color=f"C{j}",
                    label=f"{name}, step {step} (n={curves['runs']})")
        ax.set_title(variant)
        ax.set_xlabel("coverage (% of pixels selected)")
        ax.set_ylabel("precision (% of selected correct)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [variant for variant, _ in panels]


def write_results(workdir: str, revision: Optional[str] = None) -> dict:
    """Writes results.json, results.md, <sweep>_miou.png, class_accuracy.png,
    eval_curves.png and (for runs that recorded their segments) run_segments.md into `workdir`
    (`revision`: see `summarize`)."""
    summary = summarize(workdir, revision)
    verdict_path = os.path.join(workdir, VERDICT)
    if os.path.exists(verdict_path):
        with open(verdict_path) as f:
            summary["verdict"] = f.read()
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(markdown(summary))
    if any(row["num_seeds"] for row in summary["variants"]):
        plot_bars(summary, os.path.join(workdir, f"{summary['sweep'] or 'sweep'}_miou.png"))
        plot_class_accuracy(summary, os.path.join(workdir, "class_accuracy.png"))
        plot_eval_curves(summary, os.path.join(workdir, "eval_curves.png"))
    run_segments.write(workdir, sorted(glob.glob(os.path.join(workdir, "*", "seed_*"))))
    return summary


# What a committed sweep keeps of each run: enough to re-aggregate and to check a re-run
# (and, for a semi-supervised run, which examples were labeled).
RUN_FILES = (workdir_io.CONFIG, workdir_io.EVAL_HISTORY, workdir_io.EVAL_RESULTS,
             workdir_io.DATA_SPLITS, workdir_io.REVISION, workdir_io.SEGMENTS)


def export(workdir: str, destination: str) -> None:
    """Copies the sweep's manifest and each finished run's RUN_FILES (no checkpoints, events or
    logs; an unfinished run is left out until it finishes)."""
    finished = [d for d in glob.glob(os.path.join(workdir, "*", "seed_*")) if load_run(d)]
    sweep_files = [os.path.join(workdir, name) for name in (workdir_io.SWEEP_MANIFEST, VERDICT)]
    for path in sweep_files + [os.path.join(d, name) for d in finished for name in RUN_FILES]:
        if os.path.exists(path):
            target = os.path.join(destination, os.path.relpath(path, workdir))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(path, target)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    workdir = flags.FLAGS.workdir
    if not os.path.isdir(workdir):
        raise app.UsageError(f"--workdir={workdir} is not a directory.")
    if flags.FLAGS.export_dir:
        export(workdir, flags.FLAGS.export_dir)
        workdir = flags.FLAGS.export_dir
    summary = write_results(workdir, flags.FLAGS.revision)
    if flags.FLAGS.selection_steps:
        plot_selection_curves(workdir, [int(x) for x in flags.FLAGS.selection_steps],
                              os.path.join(workdir, "selection_curves.png"))
    sys.stdout.write(markdown(summary))


def run() -> None:
    """Flags are defined here, not on import: `ablations.py` imports this module."""
    flags.DEFINE_string("workdir", None, "Sweep directory holding <variant>/seed_<k> runs.")
    flags.DEFINE_string("export_dir", None, "If set, copy the sweep there without checkpoints, "
                        "events or logs (e.g. experiments/results/NAME) and write results there.")
    flags.DEFINE_string("revision", None, "Git revision of the code that made runs without a "
                        "revision.txt (runs that predate it), recorded in results.json.")
    flags.DEFINE_list("selection_steps", [], "If set (e.g. 900,3600), also plot each arm's "
                      "selection_curves at these steps into selection_curves.png.")
    flags.mark_flags_as_required(["workdir"])
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
