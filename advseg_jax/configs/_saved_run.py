"""A training run's own config.json as a config file: `--config=_saved_run.py:DIR/config.json`.

The CLIs that read a trained run (evaluate, predict, benchmark) pass this when `--config` is not
given (`cli.with_workdir_config`), so the networks and data are those the run was trained with
and `--config.KEY=VALUE` overrides still apply on top. Private (leading underscore): not listed
as a shipped config.
"""

import json
from typing import Any

import ml_collections


def _with_tuples(value: Any) -> Any:
    """JSON lists back to tuples: every sequence in the shipped configs is a tuple, and
    `--config.input.crop_size='(64,64)'` overrides type-check against the stored value."""
    if isinstance(value, dict):
        return {key: _with_tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_with_tuples(item) for item in value)
    return value


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """`saved`, plus the keys a later revision added, at their defaults: new keys default to
    the behaviour before them (e.g. `segmentor.width_divisor` 1), so an older run still reads."""
    merged = dict(saved)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _with_defaults(merged[key], value)
    return merged


def get_config(config_json: str) -> ml_collections.ConfigDict:
    from advseg_jax.configs import default  # pylint: disable=g-import-not-at-top
    try:
        with open(config_json) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the run's config {config_json!r}: {error}. Pass "
                         "--config=FILE the run was trained with instead.") from error
    defaults = json.loads(default.get_config().to_json_best_effort())
    return ml_collections.ConfigDict(_with_tuples(_with_defaults(saved, defaults)))
