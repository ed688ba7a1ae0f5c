"""`train_and_evaluate`: the loop around the steps — logging, evaluation, checkpoints, resume.

Everything random derives from `config.seed` and the step, and the data stream resumes at the
exact record, so a run restarted from checkpoint k continues as if it had never stopped.
"""

import contextlib
import os
import signal
import time
from typing import Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from clu import periodic_actions
from jax.experimental import multihost_utils

from advseg_jax import checkpointing
from advseg_jax import config_checks
from advseg_jax import dicts
from advseg_jax import evaluation
from advseg_jax import input_pipeline
from advseg_jax import sharding
from advseg_jax import train_step as steps
from advseg_jax import workdir_io


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
                  skipped: int) -> int:
    """Returns the updated count of skipped steps, or raises NonFiniteError."""
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
    logging.warning("%s Skipping it (config.skip_nonfinite_steps=True).", message)
    return skipped + 1


def _settle(step: int, device_metrics: dict, config: ml_collections.ConfigDict, skipped: int,
            logged: list) -> int:
    """Brings one step's metrics to the host once: checked for non-finite values, kept for logs."""
    scalars = steps.host_scalars(device_metrics)
    skipped = _check_finite(step, scalars, config, skipped)
    logged.append(scalars)
    return skipped


def _evaluate_and_write(config, workdir, writer, eval_step, state, builder, mesh, step) -> dict:
    params = state.segmentor.params
    scores, strips = evaluation.evaluate(config, eval_step, params, builder, mesh,
                                         config.eval_split, num_images=config.num_image_summaries)
    records = [dict(step=step, split=config.eval_split, **scores)]
    if config.num_train_eval_examples:
        train_scores, _ = evaluation.evaluate(config, eval_step, params, builder, mesh,
                                              config.train_split, config.num_train_eval_examples)
        records.append(dict(step=step, split="train", **train_scores))
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Optional[dict]:
    """Trains until `config.num_train_steps`, resuming from the latest checkpoint in `workdir`.

    Returns the last evaluation record (None if SIGTERM stopped the run before the end).
    """
    config_checks.validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh()
    builder = input_pipeline.get_builder(config)
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if jax.process_index() == 0:
        workdir_io.write_config(workdir, config.to_json_best_effort(indent=1))

    segmentor, adversary = steps.build_models(config)
    checkpoints = checkpointing.manager(workdir, config)
    best = checkpointing.BestTracker(config, workdir)
    state = checkpointing.restore(checkpoints, steps.create_train_state(config, mesh))
    start_step = int(state.step)
    logging.info("Starting at step %d of %d on %d devices (%d processes).", start_step,
                 config.num_train_steps, jax.device_count(), jax.process_count())
    if start_step == 0:
        writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                              for k, v in dicts.flatten(config.to_dict()).items()})

    train_step = steps.make_train_step(config, mesh, segmentor, adversary)
    eval_step = steps.make_eval_step(config, mesh, segmentor)
    batches = input_pipeline.train_iterator(config, builder, start_step)
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=config.num_train_steps, writer=writer,
        every_steps=config.log_every_steps)
    logged, previous, skipped, record = [], None, 0, None
    with _TerminationFlag() as terminate, _completing_saves(checkpoints, writer):
        for step in range(start_step + 1, config.num_train_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, step_metrics = train_step(state, sharding.global_batch(next(batches), mesh))
            # Settle the *previous* step's metrics: the device runs ahead while the host looks.
            if previous is not None:
                skipped = _settle(step - 1, previous, config, skipped, logged)
            previous = step_metrics
            report_progress(step, time.time())
            last = step == config.num_train_steps
            if step % config.log_every_steps == 0 or last:
                skipped = _settle(step, previous, config, skipped, logged)
                previous = None
                scalars = {f"train/{k}": float(np.mean([m[k] for m in logged]))
                           for k in logged[0] if not k.startswith("nonfinite_")}
                scalars.update({f"train/{k}": v
                                for k, v in steps.learning_rates(config, step).items()})
                scalars["train/skipped_nonfinite_steps"] = skipped
                writer.write_scalars(step, scalars)
                logged = []
            new_best = False
            if step % config.eval_every_steps == 0 or last:
                with report_progress.timed("eval"):
                    record = _evaluate_and_write(config, workdir, writer, eval_step, state,
                                                 builder, mesh, step)
                new_best = best.improves(record)
            stopping = terminate.any_process()
            if step % config.checkpoint_every_steps == 0 or last or stopping or new_best:
                if previous is not None:
                    skipped = _settle(step, previous, config, skipped, logged)
                    previous = None
                with report_progress.timed("checkpoint"):
                    checkpointing.save(checkpoints, step, state,
                                       best.scores(record) if new_best else None)
                    if new_best:  # Recorded once on disk: the file never names a lost step.
                        checkpoints.wait_until_finished()
                        best.record(step, record, write=jax.process_index() == 0)
            if stopping:
                checkpoints.wait_until_finished()
                writer.flush()
                logging.warning("Stopped by SIGTERM after checkpointing step %d.", step)
                return None
    return record
