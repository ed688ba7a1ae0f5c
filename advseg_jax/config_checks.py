"""Fail at start, with the offending key and the valid options, not deep inside a jitted step."""

import jax
import ml_collections

from advseg_jax import checkpointing
from advseg_jax import encodings
from advseg_jax import losses
from advseg_jax import models
from advseg_jax import optim
from advseg_jax.data import class_info


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the key, its value and what to use instead."""
    if config.lambda_adv < 0:
        raise ValueError(f"lambda_adv={config.lambda_adv} must be >= 0 "
                         "(0 = baseline, no adversary).")
    if config.lambda_adv_warmup_steps < 0:
        raise ValueError(f"lambda_adv_warmup_steps={config.lambda_adv_warmup_steps} must be >= 0.")
    if config.segmentor.name not in models.segmentor_names():
        raise ValueError(f"Unknown segmentor.name={config.segmentor.name!r}; valid options: "
                         f"{models.segmentor_names()}.")
    if config.lambda_adv > 0:
        if config.adversary.name not in models.adversary_names():
            raise ValueError(f"Unknown adversary.name={config.adversary.name!r}; valid options: "
                             f"{models.adversary_names()}.")
        encodings.check_encoding(config.adversary.encoding)
        if not 0.0 < config.adversary.tau < 1.0:
            raise ValueError(f"adversary.tau={config.adversary.tau} must lie in (0, 1).")
        if config.adversary.steps_per_segmentor_step < 1:
            raise ValueError(f"adversary.steps_per_segmentor_step="
                             f"{config.adversary.steps_per_segmentor_step} must be >= 1.")
    if config.adversarial_loss not in losses.ADVERSARIAL_FORMS:
        raise ValueError(f"Unknown adversarial_loss={config.adversarial_loss!r}; valid options: "
                         f"{list(losses.ADVERSARIAL_FORMS)}.")
    for part in ("segmentor", "adversary"):
        sub = config[part]
        if sub.optimizer not in optim.OPTIMIZERS:
            raise ValueError(f"Unknown {part}.optimizer={sub.optimizer!r}; valid options: "
                             f"{list(optim.OPTIMIZERS)}.")
        if sub.schedule not in optim.SCHEDULES:
            raise ValueError(f"Unknown {part}.schedule={sub.schedule!r}; valid options: "
                             f"{list(optim.SCHEDULES)}.")
    if config.dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype={config.dtype!r}; valid options: "
                         "['float32', 'bfloat16', 'float16'].")
    class_info.class_names_for(config.dataset, config.num_classes)  # num_classes matches.
    if config.best_checkpoint_metric not in ("", *checkpointing.BEST_METRICS):
        raise ValueError(f"Unknown best_checkpoint_metric={config.best_checkpoint_metric!r}; "
                         f"valid options: {['', *checkpointing.BEST_METRICS]}.")
    devices = jax.device_count()
    for key in ("batch_size", "eval_batch_size"):
        if config[key] <= 0 or config[key] % devices:
            example = max(devices, config[key] // devices * devices)
            raise ValueError(f"{key}={config[key]} must be a positive multiple of the device count "
                             f"({devices}); e.g. {key}={example}.")
    for key in ("num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
        if config[key] <= 0:
            raise ValueError(f"{key}={config[key]} must be > 0.")
