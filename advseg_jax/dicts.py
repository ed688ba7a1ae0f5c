"""Nested dicts (configs as JSON) → flat dotted keys, for hparams and config comparisons.

Dependency-free on purpose: the results scripts import it without pulling in JAX.
"""


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} → {"a.b": 1}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
