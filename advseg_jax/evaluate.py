"""Scores a trained checkpoint on `config.eval_split`, exactly as training's evaluation does.

    python -m advseg_jax.evaluate --workdir=DIR [--step=N|latest|best] [--output=FILE.json] \\
        [--config=FILE] [--config.KEY=VALUE ...]

Installed, the same flags work as the `advseg-evaluate` console script (a shipped config can
be named, e.g. `--config=voc`).

The config defines the networks whose checkpoint is restored: without `--config` it is the
run's own DIR/config.json (overrides apply on top); a `--config` given must match the run's,
and a checkpoint it cannot restore is reported with the keys that differ. The scores come from
`evaluation.evaluate` over the whole split, the function the training loop calls, so they
equal the run's eval_results.json at that step.
Prints one JSON object to stdout (logs go to stderr) and writes it to --output (default
DIR/evaluate_<split>_<step>.json).
"""

import copy
import json
import os
import sys
from typing import Optional, Sequence, Tuple, Union

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from advseg_jax import checkpointing  # noqa: E402
from advseg_jax import cli  # noqa: E402
from advseg_jax import evaluation  # noqa: E402
from advseg_jax import sharding  # noqa: E402
from advseg_jax import config_checks  # noqa: E402
from advseg_jax import state as state_lib  # noqa: E402
from advseg_jax import train_step as steps  # noqa: E402
from advseg_jax import workdir_io  # noqa: E402
from advseg_jax.data import folder_files  # noqa: E402


class CheckpointError(FileNotFoundError):
    """No usable checkpoint in the workdir (message names the workdir and the steps it has)."""


def config_differences(config: ml_collections.ConfigDict, workdir: str) -> list:
    """'key: given vs trained' for keys that differ from the run's config.json."""
    trained = workdir_io.read_config(workdir)
    if trained is None:
        return []
    return workdir_io.config_differences(json.loads(config.to_json_best_effort()), trained)


def restore_params(config: ml_collections.ConfigDict, workdir: str,
                   step: Union[None, int, str] = None,
                   mesh: Optional[jax.sharding.Mesh] = None) -> Tuple[dict, int]:
    """(segmentor params replicated over `mesh`, checkpoint step) from `workdir`.

    `step`: a number, None for the latest, or "best" for the step best_checkpoint.json names.

    The full training state is restored because that is what the checkpoint holds; its
    template is built without pretrained weights, which the checkpoint overwrites anyway.
    """
    directory = os.path.join(workdir, workdir_io.CHECKPOINTS)
    if not os.path.isdir(directory):  # Checked first: the manager would create it.
        raise CheckpointError(f"No checkpoint in workdir {workdir!r}: {directory} does not "
                              "exist (available steps: none). Train with python -m "
                              f"advseg_jax.main --workdir={workdir} first.")
    try:
        step = checkpointing.resolve_step(workdir, step)
    except FileNotFoundError as error:
        raise CheckpointError(str(error)) from error
    manager = checkpointing.manager(workdir, config)
    try:
        available = sorted(manager.all_steps())
        if not available or (step is not None and step not in available):
            wanted = "any step" if step is None else f"step {step}"
            raise CheckpointError(f"No checkpoint for {wanted} in workdir {workdir!r}; "
                                  f"available steps: {available or 'none'}.")
        step = available[-1] if step is None else step
        template_config = copy.deepcopy(config)
        template_config.segmentor.pretrained = ""
        template = state_lib.create_train_state(template_config, mesh or sharding.make_mesh())
        try:
            state = checkpointing.restore(manager, template, step)
        except Exception as error:  # Orbax raises assorted types on a structure mismatch.
            differences = config_differences(config, workdir)
            hint = ("; the config differs from the run's config.json (given vs trained): " +
                    "; ".join(differences[:12])) if differences else ""
            raise CheckpointError(
                f"Cannot restore step {step} of workdir {workdir!r} with this config{hint}. "
                "Pass the config and --config.KEY=VALUE overrides the run was trained with. "
                f"Orbax says: {str(error)[:2000]}") from error
    finally:
        manager.close()
    return state.segmentor.params, step


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: Union[None, int, str] = None) -> dict:
    """{step, split, mean_iou, pixel_accuracy, mean_class_accuracy, class_names, per_class_*}.

    NaN scores (a class absent from the split) become None.
    """
    mesh = sharding.make_mesh()
    # As training resolved it, from one read of the dataset (unchecked: the run checked it).
    config, facts = config_checks.resolve(config, check=False)
    params, step = restore_params(config, workdir, step, mesh)
    segmentor, _ = state_lib.build_models(config)
    eval_step = steps.make_eval_step(config, mesh, segmentor)
    scores, _ = evaluation.evaluate(config, eval_step, params, facts, mesh, config.eval_split)
    scores.pop("confusion")
    return workdir_io.json_ready({"step": step, "split": config.eval_split, **scores})


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    cli.hide_accelerators_from_tensorflow()
    try:
        step = checkpointing.parse_step(FLAGS.step)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    try:
        result = evaluate_checkpoint(config_checks.config_from_flag(FLAGS), FLAGS.workdir, step)
    except (CheckpointError, config_checks.ConfigError, folder_files.FolderError) as error:
        sys.exit(f"Error: {error}")
    output = FLAGS.output or os.path.join(
        FLAGS.workdir, f"evaluate_{result['split']}_{result['step']}.json")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps(result))
    logging.info("Step %d on %s: mIoU %.4f (written to %s).\n%s", result["step"],
                 result["split"], result["mean_iou"] or float("nan"), output,
                 per_class_table(result))


def per_class_table(result: dict) -> str:
    """One line per class: name, IoU and accuracy in % ('—' for a class absent from the split)."""
    def percent(value):
        return "—" if value is None else f"{100 * value:.1f}"
    width = max(len(name) for name in result["class_names"])
    lines = [f"{'class':<{width}}  {'IoU %':>6}  {'acc %':>6}"]
    for name, iou, accuracy in zip(result["class_names"], result["per_class_iou"],
                                   result["per_class_accuracy"]):
        lines.append(f"{name:<{width}}  {percent(iou):>6}  {percent(accuracy):>6}")
    return "\n".join(lines)


def _define_flags() -> None:
    """Defined here, not on import, so tests and other tools can import this module's functions."""
    flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
    flags.DEFINE_string("step", None, "Checkpoint step to evaluate: a number, 'latest' (the "
                        "default) or 'best' (best by config.best_checkpoint_metric).")
    flags.DEFINE_string("output", None, "JSON file to write (default: "
                        "WORKDIR/evaluate_<split>_<step>.json).")
    config_flags.DEFINE_config_file("config", None, "The run's training config (default: "
                                    "--workdir's config.json).", lock_config=True)
    flags.mark_flags_as_required(["config", "workdir"])


def run() -> None:
    _define_flags()
    cli.run(main, __name__, config_from_workdir=True)


if __name__ == "__main__":
    run()
