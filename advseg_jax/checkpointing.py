"""Orbax checkpoints of the full `AdvSegState` in `workdir/checkpoints/<step>`.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves no half-written step that `latest_step()` could pick up.

Kept: the latest `config.keep_checkpoints` steps, and, when `config.best_checkpoint_metric` is
set, the best evaluated one. A step is saved with its scores only when its evaluation beat
every earlier one, so orbax's best-of-those is exactly the step `best_checkpoint.json` names.
"""

import os
from typing import Optional, Union

import jax
import ml_collections
import orbax.checkpoint as ocp

from advseg_jax import workdir_io


BEST = "best"  # `--step=best`: the step recorded in best_checkpoint.json.
BEST_METRICS = ("mean_iou", "pixel_accuracy", "mean_class_accuracy")  # Higher is better.


def manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    policies = [ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints)]
    metric = config.best_checkpoint_metric
    best_fn = None
    if metric:
        def best_fn(scores):
            return scores[metric]
        policies.append(ocp.checkpoint_managers.BestN(
            get_metric_fn=best_fn, n=1, keep_checkpoints_without_metrics=False))
    # best_fn also makes orbax write the scores with the step and read them back on restart;
    # the preservation policy alone would forget them and drop the best step after a resume.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=best_fn, best_mode="max", create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), workdir_io.CHECKPOINTS),
                                 options=options)


def save(checkpoints: ocp.CheckpointManager, step: int, state,
         scores: Optional[dict] = None) -> None:
    """`scores`: only for a new best step (see the module docstring)."""
    checkpoints.save(step, args=ocp.args.StandardSave(state), metrics=scores, force=True)


def parse_step(text: Optional[str]) -> Union[None, int, str]:
    """A `--step` value: None or "latest" → None, "best" → BEST, digits → int."""
    if text in (None, "", "latest"):
        return None
    if text == BEST:
        return BEST
    if not text.isdigit():
        raise ValueError(f"--step={text!r}: use a step number, 'latest' or 'best'.")
    return int(text)


def resolve_step(workdir: str, step: Union[None, int, str]) -> Optional[int]:
    """`step` as a number (None stays None = latest); BEST → the step best_checkpoint.json names."""
    if step != BEST:
        return step
    best = workdir_io.read_best_checkpoint(workdir)
    if best is None:
        raise FileNotFoundError(
            f"No best checkpoint recorded in workdir {workdir!r} ({workdir_io.BEST_CHECKPOINT} "
            "is missing): the run has not evaluated yet, or it was trained with "
            "config.best_checkpoint_metric=''. Pass --step=N or leave --step out for the latest.")
    return best["step"]


class BestTracker:
    """Decides which evaluations are new bests of `config.best_checkpoint_metric`.

    Resumes from the workdir's best_checkpoint.json, so a restarted run keeps comparing against
    the best of its earlier part.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.metric = config.best_checkpoint_metric
        self.workdir = workdir
        recorded = workdir_io.read_best_checkpoint(workdir) if self.metric else None
        if recorded is not None and recorded["metric"] != self.metric:
            raise ValueError(
                f"config.best_checkpoint_metric={self.metric!r} but workdir {workdir!r} keeps its "
                f"best checkpoint by {recorded['metric']!r} ({workdir_io.BEST_CHECKPOINT}); "
                "train with the original metric or in a new workdir.")
        self.value = recorded["value"] if recorded is not None else None

    def improves(self, record: dict) -> bool:
        """True if `record` (an evaluation) beats every earlier one; NaN never does."""
        if not self.metric:
            return False
        value = record[self.metric]
        return value == value and (self.value is None or value > self.value)

    def scores(self, record: dict) -> dict:
        return {key: float(record[key]) for key in BEST_METRICS}

    def record(self, step: int, record: dict, write: bool = True) -> None:
        """Call once the step's checkpoint is saved (finished), so the file never names a step
        that is not on disk. `write`: False on all processes but one."""
        self.value = float(record[self.metric])
        if write:
            workdir_io.write_best_checkpoint(self.workdir, self.metric, step, self.value)


def restore(checkpoints: ocp.CheckpointManager, state, step: Optional[int] = None):
    """`state` with values from checkpoint `step` (default: latest); `state` if there is none.

    `state` supplies the structure, shapes and shardings, so the restored arrays land where a
    fresh state would (replicated over the current mesh, whatever the saving run's topology).
    """
    step = checkpoints.latest_step() if step is None else step
    if step is None:
        return state
    if step not in checkpoints.all_steps():
        raise ValueError(f"No checkpoint for step {step} in {checkpoints.directory}; "
                         f"available steps: {sorted(checkpoints.all_steps())}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return checkpoints.restore(step, args=ocp.args.StandardRestore(abstract))
