"""`train_and_evaluate`: the loop around the steps — logging, evaluation, checkpoints, resume.

Everything random derives from `config.seed` and the step, and the data stream resumes at the
exact record, so a run restarted from checkpoint k continues as if it had never stopped.
Whatever can be checked before the first step is (config, sizes, dataset, the workdir lock,
the checkpoint's shapes), and a step is checkpointed before it is evaluated, so a mistake
costs minutes of start-up rather than hours of training.
"""

import contextlib
import json
import os
import signal
import time
from typing import Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from advseg_jax import checkpointing
from advseg_jax import config_checks
from advseg_jax import device_metrics
from advseg_jax import device_prefetch
from advseg_jax import dicts
from advseg_jax import evaluation
from advseg_jax import input_pipeline
from advseg_jax import metric_writer
from advseg_jax import sharding
from advseg_jax import optim
from advseg_jax import progress
from advseg_jax import selection_curves
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from advseg_jax import workdir_io
from advseg_jax import workdir_lock
from advseg_jax.data import dataset_facts


class NonFiniteError(FloatingPointError):
    """A loss or gradient was NaN/Inf and `config.skip_nonfinite_steps` is False."""


class _TerminationFlag:
    """Set by SIGTERM (preemption); the loop checkpoints at the next step boundary and exits."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread (e.g. a notebook's worker): no handler.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: checkpointing at the end of this step, then exiting.")
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def any_process(self) -> bool:
        if jax.process_count() == 1:
            return self.raised
        return bool(multihost_utils.process_allgather(np.array(self.raised)).any())


@contextlib.contextmanager
def _completing_saves(checkpoints, writer):
    """On every exit (the end, SIGTERM, NonFiniteError, a crash) finish the saves under way.

    An async save cut short by the interpreter exiting stays a temporary directory, so the
    last good checkpoint before a NonFiniteError would be lost.
    """
    try:
        yield
    finally:
        checkpoints.wait_until_finished()
        writer.flush()


def _check_finite(step: int, scalars: dict, config: ml_collections.ConfigDict,
                  skipped: int, steps_run: int) -> int:
    """Returns the updated count of skipped steps, or raises NonFiniteError.

    Skipping is for rare spikes: a run that skips more than `max_nonfinite_fraction` of its
    steps (a lone skipped step never counts as that) is not training, so it stops.
    """
    bad = [k[len("nonfinite_"):] for k, v in scalars.items() if k.startswith("nonfinite_") and v]
    if not bad:
        return skipped
    losses = {k: scalars.get(k) for k in ("cross_entropy", "adversarial_term", "adversary_loss")
              if k in scalars}
    message = (f"Non-finite loss or gradient at step {step} in the {' and '.join(bad)} update "
               f"(losses: {losses}). The update was not applied.")
    if not config.skip_nonfinite_steps:
        raise NonFiniteError(message + " Lower the learning rates or set "
                             "config.skip_nonfinite_steps=True to skip such steps.")
    skipped += 1
    limit = config.max_nonfinite_fraction
    if skipped > max(1.0, limit * steps_run):
        raise NonFiniteError(
            f"{message} {skipped} of the {steps_run} steps run by this process were skipped as "
            f"non-finite, more than max_nonfinite_fraction={limit}: the run is not training. "
            "Lower the learning rates (or check the data); raise "
            "config.max_nonfinite_fraction only if such steps are known to be rare spikes.")
    logging.warning("%s Skipping it (config.skip_nonfinite_steps=True; %d skipped so far).",
                    message, skipped)
    return skipped


def interval_means(logged: list) -> dict:
    """The log interval's mean of each step metric; the selection accuracy is weighted by each
    step's scored pixels (a step that selected none reports -1, which must not be averaged
    in), and is -1 only if no step of the interval scored a pixel."""
    means = {k: float(np.mean([m[k] for m in logged]))
             for k in logged[0] if not k.startswith("nonfinite_")}
    if "semi_selected_scored_pixels" in means:
        scored = np.array([m["semi_selected_scored_pixels"] for m in logged], np.float64)
        accuracy = np.array([m["semi_selected_accuracy"] for m in logged], np.float64)
        means["semi_selected_accuracy"] = (float(np.sum(scored * accuracy) / np.sum(scored))
                                           if np.sum(scored) > 0 else -1.0)
    return means


def _settle(pending: device_metrics.StepMetrics, config: ml_collections.ConfigDict,
            skipped: int, logged: list, start_step: int) -> int:
    """Brings the pending steps' metrics to the host at once; each step is checked for
    non-finite values in order (the first bad one is named) and kept for the interval's log."""
    with _sync_point():
        fetched = pending.fetch()
    for step, scalars in fetched:
        skipped = _check_finite(step, scalars, config, skipped, step - start_step)
        logged.append(scalars)
    return skipped


# The device→host transfer guard over each training step, outside its explicit sync points
# (`_sync_point`: settling metrics, checkpointing, evaluating, the multi-process SIGTERM vote).
# "allow" in runs; tests set "disallow_explicit" to prove the other steps never wait on the device.
_BETWEEN_SYNCS_TRANSFER_GUARD = "allow"


def _sync_point():
    """Where the loop may wait for the device and read from it."""
    return jax.transfer_guard_device_to_host("allow")


class _InputWait:
    """The share of a log interval's wall time spent waiting for the next batch.

    Evaluations are left out of the wall time: they are not the loop waiting for its input.
    """

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self._start, self._waited, self._excluded = time.perf_counter(), 0.0, 0.0

    def next_batch(self, batches):
        started = time.perf_counter()
        batch = next(batches)
        self._waited += time.perf_counter() - started
        return batch

    @contextlib.contextmanager
    def excluded(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self._excluded += time.perf_counter() - started

    def fraction(self) -> float:
        wall = time.perf_counter() - self._start - self._excluded
        return self._waited / wall if wall > 0 else 0.0


def _evaluate_and_write(config, workdir, writer, eval_step, state, facts, mesh, step,
                        curves_step=None) -> dict:
    params = state.segmentor.params
    scores, strips = evaluation.evaluate(config, eval_step, params, facts, mesh,
                                         config.eval_split, num_images=config.num_image_summaries)
    # Epochs, not steps, are what curves are compared by (Fig. 4), across batch sizes and splits.
    epoch = step * config.batch_size / facts.num_examples(config.train_split)
    records = [dict(step=step, epoch=epoch, split=config.eval_split, **scores)]
    if config.num_train_eval_examples:
        # -1: the whole training split (unaugmented), as the paper's training-set curve.
        count = None if config.num_train_eval_examples < 0 else config.num_train_eval_examples
        train_scores, _ = evaluation.evaluate(config, eval_step, params, facts, mesh,
                                              config.train_split, count)
        records.append(dict(step=step, epoch=epoch, split="train", **train_scores))
    if curves_step is not None:  # Issue 32: what each self-training criterion would select.
        records[0]["selection_curves"] = selection_curves.evaluate(config, curves_step, state,
                                                                   facts.builder, mesh)
    for record in records:
        prefix = "eval" if record["split"] == config.eval_split else "train_eval"
        writer.write_scalars(step, {f"{prefix}/{k}": record[k] for k in
                                    ("mean_iou", "pixel_accuracy", "mean_class_accuracy")})
        writer.write_scalars(step, {f"{prefix}_per_class_iou/{name}": iou for name, iou in
                                    zip(record["class_names"], record["per_class_iou"])})
    if strips is not None and len(strips):
        writer.write_images(step, {"eval/image_truth_prediction": strips})
    if jax.process_index() == 0:
        latest = {k: records[0][k] for k in ("step", "mean_iou", "pixel_accuracy",
                                             "mean_class_accuracy", "class_names",
                                             "per_class_iou")}
        workdir_io.write_eval_results(workdir, latest)
        workdir_io.append_eval_history(
            workdir, [{k: v for k, v in r.items() if k != "confusion"} for r in records])
    logging.info("Eval at step %d: mIoU %.4f, pixel acc %.4f, class acc %.4f", step,
                 scores["mean_iou"], scores["pixel_accuracy"], scores["mean_class_accuracy"])
    return records[0]


def _restore(config: ml_collections.ConfigDict, workdir: str, checkpoints, mesh):
    """The latest restorable state (fresh at step 0 if none), then config.json for this run.

    config.json is written only after the restore succeeded, so a refused resume leaves the
    trained run's config in place; on resume the keys that changed are listed.
    """
    saved = workdir_io.read_config(workdir)
    differences = (workdir_io.config_differences(
        json.loads(config.to_json_best_effort()), saved) if saved else [])
    hint = ""
    if differences:
        hint = (f"  Config keys that differ from {os.path.join(workdir, 'config.json')} (this run "
                "vs saved): " + "; ".join(differences[:10]) +
                (f"; and {len(differences) - 10} more" if len(differences) > 10 else "") + ".")
    state = checkpointing.restore_or_fall_back(
        checkpoints, state_lib.create_train_state(config, mesh), workdir, hint)
    if int(state.step) > 0 and differences:
        logging.warning("Resuming step %d with a config that differs from the saved "
                        "config.json (this run vs saved): %s", int(state.step),
                        "; ".join(differences))
    if jax.process_index() == 0:
        workdir_io.write_config(workdir, config.to_json_best_effort(indent=1))
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Optional[dict]:
    """Trains until `config.num_train_steps`, resuming from the latest checkpoint in `workdir`.

    Returns the last evaluation record (None if SIGTERM stopped the run before the end).
    Refuses, before anything is written, a config that cannot work (`ConfigError`), a
    workdir in use by a live run (`WorkdirInUseError`) and a checkpoint of another model
    (`RestoreError`).
    """
    # One read of the dataset (prepared on first use) resolves num_classes = 0 and
    # input.eval_size = (0, 0) and checks the config against the data.
    config, facts = config_checks.resolve(config)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock.locked(workdir):
        return _train_locked(config, facts, workdir)


def _train_locked(config: ml_collections.ConfigDict, facts: dataset_facts.DatasetFacts,
                  workdir: str) -> Optional[dict]:
    mesh = sharding.make_mesh()
    builder = facts.builder
    segmentor, adversary = state_lib.build_models(config)
    best = checkpointing.BestTracker(config, workdir)
    checkpoints = checkpointing.manager(workdir, config)
    state = _restore(config, workdir, checkpoints, mesh)
    writer = metric_writer.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    start_step = int(state.step)
    logging.info("Starting at step %d of %d on %d devices (%d processes).", start_step,
                 config.num_train_steps, jax.device_count(), jax.process_count())
    if start_step == 0:
        writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                              for k, v in dicts.flatten(config.to_dict()).items()})

    train_step = steps.make_train_step(config, mesh, segmentor, adversary)
    eval_step = steps.make_eval_step(config, mesh, segmentor)
    curves_step = (selection_curves.make_curves_step(config, mesh, segmentor, adversary)
                   if config.selection_curves_split else None)
    record = None
    if _missed_eval(config, workdir, start_step):
        logging.info("Evaluating step %d, checkpointed but not evaluated before.", start_step)
        record = _evaluate_and_write(config, workdir, writer, eval_step, state, facts, mesh,
                                     start_step, curves_step)
        _track_best(best, checkpoints, start_step, record)
    batches = device_prefetch.Prefetcher(
        _device_batches(config, builder, workdir, start_step, mesh), _DEVICE_PREFETCH_DEPTH)
    report_progress = progress.ReportProgress(
        num_train_steps=config.num_train_steps, writer=writer,
        every_steps=config.log_every_steps)
    pending = device_metrics.StepMetrics(config.log_every_steps)
    input_wait = _InputWait()
    logged, skipped = [], 0
    with _TerminationFlag() as terminate, _completing_saves(checkpoints, writer):
        for step in range(start_step + 1, config.num_train_steps + 1):
            with jax.transfer_guard_device_to_host(_BETWEEN_SYNCS_TRANSFER_GUARD):
                batch = input_wait.next_batch(batches)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, step_metrics = train_step(state, batch)
                pending.add(step, step_metrics)  # Read back at the next sync point.
                report_progress(step, time.time())
                last = step == config.num_train_steps
                with _sync_point():  # Multi-process: a vote over the devices.
                    stopping = terminate.any_process()
                evaluating = _is_eval_step(config, step)
                if step % config.log_every_steps == 0 or last:
                    skipped = _settle(pending, config, skipped, logged, start_step)
                    scalars = {f"train/{k}": v for k, v in interval_means(logged).items()}
                    with _sync_point():
                        scalars.update({f"train/{k}": v for k, v in
                                        optim.learning_rates(config, step).items()})
                    scalars["train/skipped_nonfinite_steps"] = skipped
                    scalars["train/input_wait_fraction"] = input_wait.fraction()
                    writer.write_scalars(step, scalars)
                    logged = []
                    input_wait.restart()
                # Checkpoint before evaluating: a failing evaluation must not cost the training.
                # With a best metric every evaluated step is saved, so it can become the best.
                # A step is settled (checked finite) before any checkpoint can hold it.
                if (step % config.checkpoint_every_steps == 0 or last or stopping
                        or (evaluating and best.metric)):
                    skipped = _settle(pending, config, skipped, logged, start_step)
                    with report_progress.timed("checkpoint"), _sync_point():
                        checkpointing.save(checkpoints, step, state)
                if evaluating:
                    skipped = _settle(pending, config, skipped, logged, start_step)
                    with report_progress.timed("eval"), input_wait.excluded(), _sync_point():
                        record = _evaluate_and_write(config, workdir, writer, eval_step, state,
                                                     facts, mesh, step, curves_step)
                        _track_best(best, checkpoints, step, record)
            if stopping:
                checkpoints.wait_until_finished()
                writer.flush()
                logging.warning("Stopped by SIGTERM after checkpointing step %d.", step)
                return None
    return record


# Batches copied to the device ahead of their step: the copy of step k+1's batch overlaps
# step k, with one more in reserve for a slow host batch. Each costs one batch of device memory.
_DEVICE_PREFETCH_DEPTH = 2


def _device_batches(config: ml_collections.ConfigDict, builder, workdir: str,
                    start_step: int, mesh):
    """The training batches from `start_step + 1` on, labels checked, as arrays on the mesh."""
    host_batches = _batches(config, builder, workdir, start_step)
    for step in range(start_step + 1, config.num_train_steps + 1):
        batch = next(host_batches)
        config_checks.check_labels(batch["label"], config, step)
        yield sharding.global_batch(batch, mesh)


def _batches(config: ml_collections.ConfigDict, builder, workdir: str, start_step: int):
    """The labeled stream, joined by the unlabeled one (its own order) when configured.

    A run on a slice of the training data, or with unlabeled data, records which examples were
    labeled and which not (data_splits.json): the lists its results are reproduced from.
    """
    labeled = input_pipeline.train_iterator(config, builder, start_step)
    splits = [split for split in (config.train_split, config.unlabeled_split) if split]
    if jax.process_index() == 0 and (len(splits) > 1 or "[" in config.train_split):
        workdir_io.write_data_splits(workdir, {
            split: input_pipeline.example_ids(builder, split) for split in splits})
    if not config.unlabeled_split:
        return labeled
    unlabeled = input_pipeline.unlabeled_iterator(config, builder, start_step)
    return ({**batch, **next(unlabeled)} for batch in labeled)


def _track_best(best: checkpointing.BestTracker, checkpoints, step: int, record: dict) -> None:
    """Records `step` (already checkpointed) as the best if its evaluation beats the earlier ones.

    Written once the checkpoint is on disk, so best_checkpoint.json never names a lost step.
    """
    if best.improves(record):
        checkpoints.wait_until_finished()
        best.record(step, record, write=jax.process_index() == 0)


def _is_eval_step(config: ml_collections.ConfigDict, step: int) -> bool:
    return step > 0 and (step % config.eval_every_steps == 0 or step == config.num_train_steps)


def _missed_eval(config: ml_collections.ConfigDict, workdir: str, step: int) -> bool:
    """Whether the last run stopped between checkpointing eval step `step` and evaluating it.

    Process 0's reading decides for all, since every process must run the evaluation or none.
    """
    missed = _is_eval_step(config, step) and step not in workdir_io.evaluated_steps(
        workdir, config.eval_split)
    if jax.process_count() > 1:
        missed = bool(multihost_utils.broadcast_one_to_all(np.array(missed)))
    return missed
