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


def get_config(config_json: str) -> ml_collections.ConfigDict:
    try:
        with open(config_json) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the run's config {config_json!r}: {error}. Pass "
                         "--config=FILE the run was trained with instead.") from error
    return ml_collections.ConfigDict(_with_tuples(saved))
