"""How sure a trained segmentor is when it is right and when it is wrong, on its evaluation split.

    python experiments/calibration.py --workdir=RUN [--step=latest|best|N] [--output=FILE.json] \\
        [--config=FILE] [--config.KEY=VALUE ...]

Why: the scores of the paper (mIoU, pixel and class accuracy) read only the argmax, so they
cannot tell a segmentor that is wrong with 40 % confidence from one that is wrong with 99.9 %.
The adversary of Luc et al. with the Basic encoding can tell soft maps from one-hot ground
truth, which pushes the segmentor towards sharp maps; this measures whether it did, on images
it was not trained on. Over every non-void pixel of the split (the same pixels, images and
bilinear up-sampling as training's evaluation), the segmentor's softmax at the label's size:

- `nll`: mean negative log-likelihood of the true class (the test-image cross-entropy);
- `ece`: expected calibration error over `--bins` equal-width bins of the top probability
  (Guo et al. 2017): Σ_b (n_b / N) · |accuracy_b − mean top probability_b|;
- `confidence_correct` / `confidence_wrong`: mean top probability on right and on wrong pixels;
- `wrong_confident_fraction`: share of the wrong pixels whose top probability is ≥ 0.99;
- `pixel_accuracy`, to check the pixels against the run's own evaluation.

Prints one JSON object and writes it to --output (default WORKDIR/calibration_<split>_<step>.json).

    python experiments/calibration.py --summarize='DIR/*.json'

prints a markdown table of such files, mean ± std over the runs of each `lambda_adv`.
"""

import glob
import json
import os
import sys
from typing import Dict, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):  # Run as a script: make `advseg_jax` importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from advseg_jax import checkpointing  # noqa: E402
from advseg_jax import cli  # noqa: E402
from advseg_jax import config_checks  # noqa: E402
from advseg_jax import evaluate  # noqa: E402
from advseg_jax import input_pipeline  # noqa: E402
from advseg_jax import sharding  # noqa: E402
from advseg_jax import state as state_lib  # noqa: E402
from advseg_jax import train_step as steps  # noqa: E402
from advseg_jax.data import class_info  # noqa: E402
from advseg_jax.data import folder_files  # noqa: E402

CONFIDENT = 0.99  # A wrong pixel at or above this top probability counts as confidently wrong.
SUM_KEYS = ("count", "nll", "correct", "confidence_correct", "confidence_wrong",
            "wrong_confident", "bin_count", "bin_confidence", "bin_correct")


def calibration_sums(logits: jnp.ndarray, labels: jnp.ndarray, weights: jnp.ndarray,
                     num_bins: int) -> Dict[str, jnp.ndarray]:
    """Sums over the pixels of one batch whose weight is 1 and label is not void.

    logits [N, H, W, C] at the labels' size; labels [N, H, W] (void: IGNORE_LABEL); weights
    [N, H, W] (0 on padding). Sums, not means, so batches add up exactly.
    """
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    valid = (weights > 0) & (labels != class_info.IGNORE_LABEL)
    safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)
    true_log_prob = jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
    confidence = jnp.exp(jnp.max(log_probs, axis=-1))
    correct = (jnp.argmax(log_probs, axis=-1) == safe_labels) & valid
    wrong = valid & ~correct
    valid_f, correct_f, wrong_f = (x.astype(jnp.float32) for x in (valid, correct, wrong))
    # Top probability 1.0 falls in the last bin, as in Guo et al.'s (lo, hi] bins.
    bins = jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    one_hot = jax.nn.one_hot(bins, num_bins) * valid_f[..., None]
    return {
        "count": valid_f.sum(),
        "nll": -(true_log_prob * valid_f).sum(),
        "correct": correct_f.sum(),
        "confidence_correct": (confidence * correct_f).sum(),
        "confidence_wrong": (confidence * wrong_f).sum(),
        "wrong_confident": (wrong_f * (confidence >= CONFIDENT)).sum(),
        "bin_count": one_hot.sum(axis=(0, 1, 2)),
        "bin_confidence": (one_hot * confidence[..., None]).sum(axis=(0, 1, 2)),
        "bin_correct": (one_hot * correct_f[..., None]).sum(axis=(0, 1, 2)),
    }


def scores_from_sums(sums: Dict[str, np.ndarray]) -> dict:
    """The module docstring's scores from sums over a whole split (float64 on the host)."""
    count = float(sums["count"])
    if count == 0:
        raise ValueError("No labelled pixel in the split: nothing to calibrate against.")
    correct = float(sums["correct"])
    wrong = count - correct
    bin_count = np.asarray(sums["bin_count"], np.float64)
    filled = bin_count > 0
    gap = np.abs(np.asarray(sums["bin_correct"], np.float64)[filled] -
                 np.asarray(sums["bin_confidence"], np.float64)[filled])
    return {
        "pixels": int(round(count)),
        "pixel_accuracy": correct / count,
        "nll": float(sums["nll"]) / count,
        "ece": float(gap.sum()) / count,
        "confidence_correct": float(sums["confidence_correct"]) / correct if correct else None,
        "confidence_wrong": float(sums["confidence_wrong"]) / wrong if wrong else None,
        "wrong_confident_fraction": float(sums["wrong_confident"]) / wrong if wrong else None,
        "bins": len(bin_count),
    }


def calibrate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                         step: Union[None, int, str] = None, num_bins: int = 15,
                         num_examples: Optional[int] = None) -> dict:
    """{step, split, lambda_adv and the scores of `scores_from_sums`} of a checkpoint on
    `eval_split`. One process: it sums only the batches this process reads."""
    if jax.process_count() > 1:
        raise ValueError("calibration.py reads the split in one process; run it without "
                         "jax.distributed (one host sees every batch).")
    config, facts = config_checks.resolve(config, check=False)
    params, step = evaluate.restore_params(config, workdir, step, sharding.make_mesh())
    segmentor, _ = state_lib.build_models(config)

    @jax.jit
    def batch_sums(params, image, label, pixel_mask):
        logits = segmentor.apply({"params": params}, image.astype(jnp.float32), train=False)
        # Training's evaluation's own up-sampling, so the two score the same maps.
        logits = steps._resize_bilinear(logits, label.shape[1:3])  # pylint: disable=protected-access
        return calibration_sums(logits, label, pixel_mask, num_bins)

    totals = {key: np.float64(0) for key in SUM_KEYS}
    for batch in input_pipeline.eval_iterator(config, facts.builder, config.eval_split,
                                              num_examples):
        sums = jax.device_get(batch_sums(params, batch["image"], batch["label"],
                                         batch["pixel_mask"]))
        totals = {key: totals[key] + np.asarray(sums[key], np.float64) for key in SUM_KEYS}
    return {"step": step, "split": config.eval_split, "lambda_adv": config.lambda_adv,
            **scores_from_sums(totals)}


SUMMARY_COLUMNS = (("pixel_accuracy", "pixel acc. %", 100), ("nll", "NLL", 1),
                   ("ece", "ECE %", 100), ("confidence_correct", "conf. right %", 100),
                   ("confidence_wrong", "conf. wrong %", 100),
                   ("wrong_confident_fraction", "wrong at ≥ 0.99 %", 100))


def summary_table(paths: Sequence[str]) -> str:
    """Markdown: one row per `lambda_adv`, mean ± std (ddof=1) over the files of that value."""
    if not paths:
        raise ValueError("--summarize matched no file; give a quoted glob such as 'DIR/*.json'.")
    groups: Dict[float, list] = {}
    for path in sorted(paths):
        with open(path) as f:
            result = json.load(f)
        if "lambda_adv" not in result:
            raise ValueError(f"{path} has no lambda_adv: not written by this script.")
        groups.setdefault(result["lambda_adv"], []).append(result)
    lines = ["| λ_adv | runs | " + " | ".join(name for _, name, _ in SUMMARY_COLUMNS) + " |",
             "|---|---|" + "---|" * len(SUMMARY_COLUMNS)]
    for lambda_adv, rows in sorted(groups.items()):
        cells = []
        for key, _, scale in SUMMARY_COLUMNS:
            values = np.array([scale * r[key] for r in rows if r[key] is not None])
            if not len(values):  # E.g. no wrong pixel in any run.
                cells.append("—")
                continue
            std = f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.2f}{std}")
        lines.append(f"| {lambda_adv:g} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    if FLAGS.summarize:
        try:
            print(summary_table(glob.glob(FLAGS.summarize)))
        except ValueError as error:
            sys.exit(f"Error: {error}")
        return
    cli.hide_accelerators_from_tensorflow()
    try:
        step = checkpointing.parse_step(FLAGS.step)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    try:
        result = calibrate_checkpoint(config_checks.config_from_flag(FLAGS), FLAGS.workdir, step,
                                      FLAGS.bins)
    except (evaluate.CheckpointError, config_checks.ConfigError, folder_files.FolderError,
            ValueError) as error:
        sys.exit(f"Error: {error}")
    output = FLAGS.output or os.path.join(
        FLAGS.workdir, f"calibration_{result['split']}_{result['step']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


def run() -> None:
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
    flags.DEFINE_string("step", None, "Checkpoint step: a number, 'latest' (the default) or "
                        "'best'.")
    flags.DEFINE_string("output", None, "JSON file to write (default: "
                        "WORKDIR/calibration_<split>_<step>.json).")
    flags.DEFINE_integer("bins", 15, "Equal-width bins of the top probability for the ECE.",
                         lower_bound=1)
    config_flags.DEFINE_config_file("config", None, "The run's training config (default: "
                                    "--workdir's config.json).", lock_config=True)
    flags.DEFINE_string("summarize", None, "Glob of this script's JSON files: print their "
                        "table instead of scoring a checkpoint.")
    if any(arg.startswith("--summarize") for arg in sys.argv[1:]):
        app.run(main)
    else:
        flags.mark_flags_as_required(["config", "workdir"])
        cli.run(main, __name__, config_from_workdir=True)


if __name__ == "__main__":
    run()
