"""Orbax checkpoints of the full `AdvSegState` in `workdir/checkpoints/<step>`.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves no half-written step that `latest_step()` could pick up. What orbax
cannot tell apart is a checkpoint made for another model (a config mistake: refuse, keep the
checkpoint) from one whose files were damaged later (a disk or copy fault: set it aside and
resume from the one before), and its errors for both are hundreds of lines long. So the saved
shapes are compared with the template's before anything is restored.

Kept: the latest `config.keep_checkpoints` steps and, when `config.best_checkpoint_metric` is
set, the step `best_checkpoint.json` names (the best evaluated one; `--step=best`).
"""

import dataclasses
import os
import shutil
from typing import Dict, Optional, Sequence, Tuple, Union

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from advseg_jax import workdir_io

DAMAGED_DIR = "checkpoints_damaged"  # Under the workdir: outside orbax's view, nothing deleted.
_MAX_REASON_CHARS = 300

BEST = "best"  # `--step=best`: the step recorded in best_checkpoint.json.
BEST_METRICS = ("mean_iou", "pixel_accuracy", "mean_class_accuracy")  # Higher is better.


class RestoreError(ValueError):
    """A checkpoint this config cannot resume (the message says what differs, what to do)."""


class CheckpointAPIError(RestoreError):
    """Reading a checkpoint failed in the code, not in its files: nothing is set aside (a
    `RestoreError`, so the CLIs print it without a traceback)."""


# Errors of the reading code (another orbax version's API, a missing module, a bug), not of
# the files: setting checkpoints aside for these would discard an intact run. Everything else
# (OSError, ValueError, JSON and TensorStore errors about missing, truncated or corrupt files)
# counts as damage.
API_ERRORS = (TypeError, AttributeError, ImportError, NotImplementedError, NameError)


def _api_error(step: int, what: str, error: Exception) -> CheckpointAPIError:
    first_line = (str(error).strip().splitlines() or [""])[0][:_MAX_REASON_CHARS]
    return CheckpointAPIError(
        f"Reading checkpoint step {step}'s {what} failed with {type(error).__name__}: "
        f"{first_line} (orbax-checkpoint {ocp.__version__}, jax {jax.__version__}). This is an "
        "error of the code, not of the checkpoint's files, so no checkpoint was moved. Install "
        "the orbax-checkpoint version of constraints.txt (pip install -c constraints.txt "
        "orbax-checkpoint), or report the error with these versions.")


@dataclasses.dataclass
class KeepRecordedBest:
    """Orbax preservation policy: keeps the step that the workdir's best_checkpoint.json names.

    The file, not orbax's own metrics, is the record: a step is checkpointed before it is
    evaluated (a failed evaluation must not cost the training), so its scores do not exist yet
    when orbax saves it. Read at every decision, so a resumed run keeps its earlier best.
    """

    workdir: str

    def should_preserve(self, checkpoints: Sequence, *, context) -> Sequence[bool]:
        del context  # Unused: the decision depends only on the recorded step.
        best = workdir_io.read_best_checkpoint(self.workdir)
        return [best is not None and info.step == best["step"] for info in checkpoints]


def manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    policies = [ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints)]
    if config.best_checkpoint_metric:
        policies.append(KeepRecordedBest(workdir))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies), create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), workdir_io.CHECKPOINTS),
                                 options=options)


def save(checkpoints: ocp.CheckpointManager, step: int, state) -> None:
    checkpoints.save(step, args=ocp.args.StandardSave(state), force=True)


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

    def record(self, step: int, record: dict, write: bool = True) -> None:
        """Call once the step's checkpoint is saved (finished), so the file never names a step
        that is not on disk. `write`: False on all processes but one."""
        self.value = float(record[self.metric])
        if write:
            workdir_io.write_best_checkpoint(self.workdir, self.metric, step, self.value)


def _key_name(key) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def leaf_shapes(tree) -> Dict[str, Tuple[int, ...]]:
    """{"segmentor/params/stem/kernel": shape, ...}: one spelling for states and orbax metadata."""
    return {"/".join(_key_name(k) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def saved_shapes(checkpoints: ocp.CheckpointManager, step: int) -> Dict[str, Tuple[int, ...]]:
    """Leaf shapes recorded in checkpoint `step` without reading its arrays; {} if unreadable.

    Raises CheckpointAPIError for an error of the code (API_ERRORS), which is not damage.
    """
    path = os.path.join(str(checkpoints.directory), str(step), "default")
    try:
        tree = ocp.StandardCheckpointer().metadata(path).item_metadata
        return leaf_shapes(tree) if tree is not None else {}
    except API_ERRORS as error:
        raise _api_error(step, "metadata", error) from error
    except Exception:  # A damaged checkpoint's metadata fails in many ways; all mean "damaged".
        return {}


def shape_mismatch(expected: Dict[str, tuple], saved: Dict[str, tuple]) -> Optional[str]:
    """The first difference between two `leaf_shapes` (parameters first), or None."""
    def order(path):
        return ("/params/" not in path, path)

    for path in sorted(set(expected) | set(saved), key=order):
        if path not in saved:
            return (f"{path} (shape {expected[path]}) is in this config's model but not in "
                    "the checkpoint")
        if path not in expected:
            return (f"{path} (shape {saved[path]}) is in the checkpoint but not in this "
                    "config's model")
        if expected[path] != saved[path]:
            return (f"{path} has shape {saved[path]} in the checkpoint but {expected[path]} "
                    "with this config")
    return None


def _mismatch_error(checkpoints, step: int, mismatch: str, hint: str) -> RestoreError:
    return RestoreError(
        f"Cannot resume from checkpoint step {step} in {checkpoints.directory}: this config "
        f"builds a different model.\n  First difference: {mismatch}.\n"
        + (f"{hint}\n" if hint else "") +
        "  Either run with the config the checkpoint was trained with (the workdir's "
        "config.json and the same --config.KEY=VALUE overrides), or start a new run in a new "
        "--workdir.")


def _abstract(state):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)


def restore(checkpoints: ocp.CheckpointManager, state, step: Optional[int] = None,
            hint: str = ""):
    """`state` with values from checkpoint `step` (default: latest); `state` if there is none.

    `state` supplies the structure, shapes and shardings, so the restored arrays land where a
    fresh state would (replicated over the current mesh, whatever the saving run's topology).
    A checkpoint of another model raises `RestoreError` naming the first differing leaf.
    """
    step = checkpoints.latest_step() if step is None else step
    if step is None:
        return state
    if step not in checkpoints.all_steps():
        raise ValueError(f"No checkpoint for step {step} in {checkpoints.directory}; "
                         f"available steps: {sorted(checkpoints.all_steps())}.")
    saved = saved_shapes(checkpoints, step)
    mismatch = shape_mismatch(leaf_shapes(state), saved) if saved else None
    if mismatch:
        raise _mismatch_error(checkpoints, step, mismatch, hint)
    return checkpoints.restore(step, args=ocp.args.StandardRestore(_abstract(state)))


def _all_processes(ok: bool) -> bool:
    """True only if `ok` on every process, so all of them fall back to the same step."""
    if jax.process_count() == 1:
        return ok
    return bool(multihost_utils.process_allgather(np.array(ok)).all())


def _set_aside(checkpoints: ocp.CheckpointManager, step: int, workdir: str) -> str:
    """Moves step's directory to workdir/checkpoints_damaged/<step>[.k]; returns the new path."""
    target = os.path.join(workdir, DAMAGED_DIR, str(step))
    suffix = 1
    while os.path.exists(target):
        target = os.path.join(workdir, DAMAGED_DIR, f"{step}.{suffix}")
        suffix += 1
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(os.path.join(str(checkpoints.directory), str(step)), target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"advseg_jax checkpoint {step} set aside")
    checkpoints.reload()
    return target


def restore_or_fall_back(checkpoints: ocp.CheckpointManager, state, workdir: str,
                         hint: str = ""):
    """Like `restore` of the latest step, but a damaged checkpoint is set aside, not fatal.

    Damaged (unreadable metadata or arrays) checkpoints are moved, newest first, to
    `workdir/checkpoints_damaged/` with a warning, until one restores. A checkpoint of another
    model is not damage: it raises `RestoreError` and nothing is moved; nor is an error of the
    reading code (`API_ERRORS`, e.g. another orbax version): `CheckpointAPIError`, nothing
    moved. If every checkpoint
    was damaged, raises `RestoreError` after setting them all aside (a rerun starts afresh).
    """
    set_aside = []
    expected = leaf_shapes(state)
    for step in sorted(checkpoints.all_steps(), reverse=True):
        saved = saved_shapes(checkpoints, step)
        mismatch = shape_mismatch(expected, saved) if saved else None
        if mismatch:  # Same config and files on every process: all raise alike.
            raise _mismatch_error(checkpoints, step, mismatch, hint)
        reason = "its metadata cannot be read"
        if saved:
            try:
                restored = checkpoints.restore(step, args=ocp.args.StandardRestore(
                    _abstract(state)))
                reason = None
            except API_ERRORS as error:
                raise _api_error(step, "arrays", error) from error
            except Exception as error:  # Orbax/TensorStore raise assorted types for bad files.
                reason = str(error).strip().splitlines()[0][:_MAX_REASON_CHARS]
        if _all_processes(reason is None):
            if set_aside:
                logging.warning("Resuming from checkpoint step %d; the damaged checkpoint(s) "
                                "are kept in %s.", step, os.path.join(workdir, DAMAGED_DIR))
            return restored
        target = _set_aside(checkpoints, step, workdir)
        set_aside.append(step)
        logging.warning("Checkpoint step %d is damaged (%s): moved it to %s and trying the "
                        "previous checkpoint.", step, reason or "damaged on another process",
                        target)
    if set_aside:
        raise RestoreError(
            f"No checkpoint in {checkpoints.directory} restores: steps {set_aside} are damaged "
            f"and were moved to {os.path.join(workdir, DAMAGED_DIR)}. Rerun to start this "
            "run from step 0, or copy an intact checkpoint back into checkpoints/.")
    return state
