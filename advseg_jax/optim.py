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


def uses_adversary(config: ml_collections.ConfigDict) -> bool:
    """Whether any loss term needs the adversary; if none does, it is neither built nor run."""
    return (config.lambda_adv > 0 or config.get("lambda_adv_unlabeled", 0.0) > 0
            or (config.get("lambda_semi", 0.0) > 0 and discriminator_selects(config)))


SEMI_SELECTIONS = ("discriminator", "softmax")  # config.semi_selection's options.


def discriminator_selects(config: ml_collections.ConfigDict) -> bool:
    """Whether self-training's pixels are chosen by the discriminator (Hung et al.) rather than
    by the segmentor's softmax (`semi_selection`)."""
    return config.get("semi_selection", "discriminator") == "discriminator"


def adversarial_ramp(config: ml_collections.ConfigDict, step) -> jnp.ndarray:
    """The factor in [0, 1] that scales every adversarial weight at `step`.

    Linear from 0 over `lambda_adv_warmup_steps` (0 = constant). While the segmentor is still
    poor the adversary wins at once, and a full-weight adversarial term then pulls towards
    confident rather than correct maps; the ramp lets the cross-entropy shape the segmentor
    first.
    """
    warmup = config.lambda_adv_warmup_steps
    if warmup <= 0:
        return jnp.asarray(1.0, jnp.float32)
    return jnp.minimum(1.0, jnp.asarray(step).astype(jnp.float32) / warmup)


def adversarial_weight(config: ml_collections.ConfigDict, step) -> jnp.ndarray:
    """λ_adv at `step` (its warm-up ramp applied)."""
    if config.lambda_adv_warmup_steps <= 0:
        return jnp.asarray(config.lambda_adv, jnp.float32)
    return config.lambda_adv * adversarial_ramp(config, step)


def semi_weights(config: ml_collections.ConfigDict, step) -> dict:
    """λ_adv_unlabeled (ramped like λ_adv) and λ_semi (0 before `semi_start_step`) at `step`.

    Self-training waits until the discriminator's confidence means something: early on it
    trusts whatever the untrained segmentor predicts.
    """
    step = jnp.asarray(step)
    return {"lambda_adv_unlabeled": config.lambda_adv_unlabeled * adversarial_ramp(config, step),
            "lambda_semi": jnp.where(step >= config.semi_start_step,
                                     jnp.asarray(config.lambda_semi, jnp.float32), 0.0)}


def learning_rates(config: ml_collections.ConfigDict, step: int) -> dict:
    """Both schedules at `step`, for logging (host-side; schedules are pure functions)."""
    rates = {"lambda_adv": float(adversarial_weight(config, jnp.asarray(step))),
             "segmentor_learning_rate": float(
                 make_schedule(config.segmentor, config.num_train_steps)(step))}
    if config.get("unlabeled_split"):
        rates.update({k: float(v) for k, v in semi_weights(config, step).items()})
    if uses_adversary(config):
        k = config.adversary.steps_per_segmentor_step
        rates["adversary_learning_rate"] = float(
            make_schedule(config.adversary, config.num_train_steps * k)(step * k))
    return rates
