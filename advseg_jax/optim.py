"""Optax transforms and every schedule of training: each model's learning rate and λ.

Optimizers and schedules come from a model's sub-config (`config.segmentor` / `.adversary`);
λ's ramp from the top level. All are pure functions of the step, so the jitted step and the
host's logging evaluate the same values.
"""

import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "poly")


def make_schedule(opt_config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up, then constant, cosine decay to 0, or DeepLab's poly (power 0.9) to 0."""
    lr, warmup = opt_config.learning_rate, opt_config.warmup_steps
    decay_steps = max(num_steps - warmup, 1)
    if opt_config.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif opt_config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps)
    elif opt_config.schedule == "poly":
        main = optax.polynomial_schedule(lr, 0.0, power=0.9, transition_steps=decay_steps)
    else:
        raise ValueError(f"Unknown schedule={opt_config.schedule!r}; "
                         f"valid options: {list(SCHEDULES)}.")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(opt_config: ml_collections.ConfigDict,
                   num_steps: int) -> optax.GradientTransformation:
    """`num_steps` counts this model's own updates (the adversary may update k times per step)."""
    schedule = make_schedule(opt_config, num_steps)
    if opt_config.optimizer == "adam":
        optimizer = optax.adam(schedule, b1=opt_config.momentum)
    elif opt_config.optimizer == "sgd":
        optimizer = optax.sgd(schedule, momentum=opt_config.momentum or None)
    else:
        raise ValueError(
            f"Unknown optimizer={opt_config.optimizer!r}; valid options: {list(OPTIMIZERS)}.")
    if opt_config.weight_decay:
        # Decoupled from the schedule's warm-up on purpose: L2 as in Caffe's weight_decay.
        optimizer = optax.chain(optax.add_decayed_weights(opt_config.weight_decay), optimizer)
    return optimizer


def adversarial_weight(config: ml_collections.ConfigDict, step) -> jnp.ndarray:
    """λ at `step`: ramped linearly from 0 over `lambda_adv_warmup_steps` (0 = constant λ).

    While the segmentor is still poor the adversary wins at once, and a full-weight adversarial
    term then pulls towards confident rather than correct maps; the ramp lets the
    cross-entropy shape the segmentor first.
    """
    warmup = config.lambda_adv_warmup_steps
    if warmup <= 0:
        return jnp.asarray(config.lambda_adv, jnp.float32)
    return config.lambda_adv * jnp.minimum(1.0, step.astype(jnp.float32) / warmup)


def learning_rates(config: ml_collections.ConfigDict, step: int) -> dict:
    """Both schedules at `step`, for logging (host-side; schedules are pure functions)."""
    rates = {"lambda_adv": float(adversarial_weight(config, jnp.asarray(step))),
             "segmentor_learning_rate": float(
                 make_schedule(config.segmentor, config.num_train_steps)(step))}
    if config.lambda_adv > 0:
        k = config.adversary.steps_per_segmentor_step
        rates["adversary_learning_rate"] = float(
            make_schedule(config.adversary, config.num_train_steps * k)(step * k))
    return rates
