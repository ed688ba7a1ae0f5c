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
import sys
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if __package__ in (None, ""):  # Run as a script: make `advseg_jax` importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from advseg_jax import cli  # noqa: E402
from advseg_jax import dicts  # noqa: E402
from advseg_jax import workdir_io  # noqa: E402

METRICS = ("mean_iou", "pixel_accuracy", "mean_class_accuracy")
_LABELS = {"mean_iou": "mIoU", "pixel_accuracy": "Pixel acc.", "mean_class_accuracy": "Class acc."}

# Published numbers, in %, keyed by (dataset, sweep, variant): Luc, Couprie, Chintala and
# Verbeek, "Semantic Segmentation using Adversarial Networks", NIPS 2016 Workshop on Adversarial
# Training, arXiv:1611.08408. Only entries checked against the paper belong here; none are
# filled in yet (no copy of the paper's tables was at hand), so every row shows "—". The
# embedded digit_scenes data has no published numbers at all.
PAPER_RESULTS: Dict[tuple, Dict[str, float]] = {}

_SEED_DIR = re.compile(r"^seed_(\d+)$")


def read_history(run_dir: str) -> List[dict]:
    """A run's eval records, one per (step, split): a resumed run's repeated eval keeps the last."""
    return workdir_io.read_eval_history(run_dir)


def load_run(run_dir: str) -> Optional[dict]:
    """{config, final} of a finished run, None if it is missing or unfinished."""
    try:
        config = workdir_io.read_config(run_dir)
        final = workdir_io.read_eval_results(run_dir)
    except (OSError, ValueError):
        return None
    if final.get("step") != config.get("num_train_steps"):
        return None
    return {"dir": run_dir, "config": config, "final": final}


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


def summarize(workdir: str) -> dict:
    """The content of results.json: one entry per variant with per-metric mean/std over seeds."""
    manifest = workdir_io.read_manifest(workdir)
    rows, dataset, configs = [], None, []
    for variant in _variant_order(workdir, manifest):
        seed_dirs = sorted((int(m.group(1)), path)
                           for path in glob.glob(os.path.join(workdir, variant, "seed_*"))
                           if (m := _SEED_DIR.match(os.path.basename(path))))
        runs = [(seed, load_run(path)) for seed, path in seed_dirs]
        finished = [(seed, run) for seed, run in runs if run is not None]
        row = {"variant": variant,
               "overrides": (manifest or {}).get("variants", {}).get(variant),
               "seeds": [seed for seed, _ in finished], "num_seeds": len(finished),
               "unfinished_seeds": [seed for seed, run in runs if run is None]}
        configs += [run["config"] for _, run in finished]
        if finished:
            config = finished[0][1]["config"]
            dataset = dataset or config.get("dataset")
            row.update(dataset=config.get("dataset"), lambda_adv=config.get("lambda_adv"),
                       steps=config.get("num_train_steps"))
        for metric in METRICS:
            row[metric] = _stats([run["final"].get(metric) for _, run in finished])
        row["per_class_iou"] = _per_class_stats([run["final"] for _, run in finished])
        sweep = (manifest or {}).get("sweep")
        row["paper"] = PAPER_RESULTS.get((row.get("dataset"), sweep, variant))
        rows.append(row)
    swept = [key for overrides in (manifest or {}).get("variants", {}).values()
             for key in overrides]
    # The directory's name, not its path: results.json gets copied and committed.
    return {"name": os.path.basename(os.path.abspath(workdir)),
            "sweep": (manifest or {}).get("sweep"), "config": (manifest or {}).get("config"),
            "passthrough": (manifest or {}).get("passthrough", []), "dataset": dataset,
            "std": "sample std over seeds (ddof=1)", "variants": rows,
            "differing_config_keys": differing_keys(configs, swept)}


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


def markdown(summary: dict) -> str:
    """The results table: mean ± std over seeds, in %, and the paper's mIoU where it has one."""
    title = f"# Sweep `{summary['sweep'] or summary['name']}`"
    lines = [title, "",
             f"Dataset: {summary['dataset'] or '—'}. Mean ± {summary['std']}, in %, of each "
             "run's final evaluation on the evaluation split.", "",
             "| Variant | Overrides | mIoU | Pixel acc. | Class acc. | Seeds | Paper mIoU |",
             "|---|---|---|---|---|---|---|"]
    for row in summary["variants"]:
        paper = row["paper"]
        paper_text = f"{paper['mean_iou']:.1f}" if paper and "mean_iou" in paper else "—"
        seeds = str(row["num_seeds"])
        if row["unfinished_seeds"]:
            seeds += f" (+{len(row['unfinished_seeds'])} unfinished)"
        lines.append(f"| {row['variant']} | {_overrides_text(row['overrides'])} | "
                     f"{_percent(row['mean_iou'])} | {_percent(row['pixel_accuracy'])} | "
                     f"{_percent(row['mean_class_accuracy'])} | {seeds} | {paper_text} |")
    lines += per_class_markdown(summary)
    steps = sorted({row["steps"] for row in summary["variants"] if row.get("steps")})
    if steps:
        lines += ["", f"Training steps per run: {', '.join(map(str, steps))}."]
    if summary.get("differing_config_keys"):
        lines += ["", "**Warning:** the runs also differ in " +
                  ", ".join(f"`{key}`" for key in summary["differing_config_keys"]) +
                  " (see each run's config.json)."]
    if summary.get("config"):
        extra = " ".join(f"`{flag}`" for flag in summary["passthrough"]
                         if "data_dir=" not in flag) or "none"  # Paths: machine-specific.
        lines += ["", f"Base config: `{summary['config']}`; overrides for every run: {extra}."]
    return "\n".join(lines) + "\n"


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
    """Steps and a [seeds, steps] array of `metric` at the steps all runs evaluated."""
    series = []
    for run_dir in run_dirs:
        series.append({r["step"]: r[metric] for r in read_history(run_dir)
                       if r["split"] == split and r.get(metric) is not None})
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return np.array(steps), np.array([[s[step] for step in steps] for s in series])


def plot_class_accuracy(workdir: str, summary: dict, path: str,
                        metric: str = "mean_class_accuracy") -> None:
    """Per-class accuracy on train and validation against steps (Luc et al. 2016, Fig. 4).

    The paper's point: the adversarial term narrows the train/validation gap of the baseline.
    Lines are the mean over seeds, bands ± std; the baseline (lambda_adv = 0) is black.
    """
    rows = [row for row in summary["variants"] if row["num_seeds"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for i, row in enumerate(rows):
        run_dirs = [os.path.join(workdir, row["variant"], f"seed_{s}") for s in row["seeds"]]
        config = load_run(run_dirs[0])["config"]
        style = dict(color="k" if row.get("lambda_adv") == 0 else f"C{i}", label=row["variant"])
        # train.py records the train-split evaluation under split "train".
        for ax, split in zip(axes, ("train", config["eval_split"])):
            steps, values = _curves(run_dirs, split, metric)
            if not len(steps):
                continue
            mean = 100 * values.mean(axis=0)
            ax.plot(steps, mean, **style)
            if len(values) > 1:
                std = 100 * values.std(axis=0, ddof=1)
                ax.fill_between(steps, mean - std, mean + std, color=style["color"], alpha=0.15)
    for ax, title in zip(axes, ("training images (no augmentation)", "validation images")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{_LABELS.get(metric, metric)} (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Per-class accuracy during training (cf. Luc et al. 2016, Fig. 4)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(workdir: str) -> dict:
    """Writes results.json, results.md, <sweep>_miou.png and class_accuracy.png into `workdir`."""
    summary = summarize(workdir)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(markdown(summary))
    if any(row["num_seeds"] for row in summary["variants"]):
        plot_bars(summary, os.path.join(workdir, f"{summary['sweep'] or 'sweep'}_miou.png"))
        plot_class_accuracy(workdir, summary, os.path.join(workdir, "class_accuracy.png"))
    return summary


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    workdir = flags.FLAGS.workdir
    if not os.path.isdir(workdir):
        raise app.UsageError(f"--workdir={workdir} is not a directory.")
    summary = write_results(workdir)
    sys.stdout.write(markdown(summary))


def run() -> None:
    """Flags are defined here, not on import: `ablations.py` imports this module."""
    flags.DEFINE_string("workdir", None, "Sweep directory holding <variant>/seed_<k> runs.")
    flags.mark_flags_as_required(["workdir"])
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
