"""Restore: a checkpoint of another model is refused in a few lines; a damaged one is set aside."""

import functools
import logging
import os
import pathlib

import jax
import numpy as np
import pytest

from advseg_jax import checkpointing
from advseg_jax import sharding
from advseg_jax import state as state_lib


def _config(width=8, lambda_adv=0.0):  # No adversary unless asked: half the compile time.
    from configs import default
    config = default.get_config()
    config.segmentor.width = width
    config.adversary.width_divisor = 16
    config.lambda_adv = lambda_adv
    return config


@functools.lru_cache(maxsize=None)
def _fresh_state(width, lambda_adv):
    return state_lib.create_train_state(_config(width, lambda_adv), sharding.make_mesh())


def _state(config, offset=0.0):
    state = _fresh_state(config.segmentor.width, config.lambda_adv)
    return state.replace(segmentor=state.segmentor.replace(
        params=jax.tree.map(lambda p: p + offset, state.segmentor.params)))


def _save(workdir, config, states):
    manager = checkpointing.manager(str(workdir), config)
    for step, state in states.items():
        checkpointing.save(manager, step, state)
    manager.wait_until_finished()
    return manager


def _files(directory):
    return sorted(str(p.relative_to(directory)) for p in pathlib.Path(directory).rglob("*")
                  if p.is_file())


def _truncate_arrays(step_dir):
    """Empties the array data files: the metadata still reads, the arrays do not."""
    data = [p for p in pathlib.Path(step_dir).rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data
    for path in data:
        path.write_bytes(b"")


def _delete_metadata(step_dir):
    (pathlib.Path(step_dir) / "default" / "_METADATA").unlink()


def test_other_model_shape_is_refused_naming_the_leaf_and_both_shapes(tmp_path):
    manager = _save(tmp_path, _config(width=8), {2: _state(_config(width=8))})
    with pytest.raises(checkpointing.RestoreError) as error:
        checkpointing.restore(manager, _state(_config(width=16)), hint="  (hint line)")
    message = str(error.value)
    assert len(message.splitlines()) <= 20, message
    # digit_net's classifier: 1x1 conv from 2*width channels to 11 classes.
    assert "segmentor/params/classifier/kernel has shape (1, 1, 16, 11) in the checkpoint but " \
           "(1, 1, 32, 11) with this config" in message
    assert "(hint line)" in message and "new --workdir" in message and "config.json" in message
    assert manager.all_steps() == [2]  # Nothing moved: a config mistake is not damage.
    with pytest.raises(checkpointing.RestoreError):
        checkpointing.restore_or_fall_back(manager, _state(_config(width=16)), str(tmp_path))
    assert manager.all_steps() == [2] and not (tmp_path / checkpointing.DAMAGED_DIR).exists()


def test_baseline_checkpoint_into_adversarial_config_names_the_missing_adversary(tmp_path):
    manager = _save(tmp_path, _config(lambda_adv=0.0), {2: _state(_config(lambda_adv=0.0))})
    with pytest.raises(checkpointing.RestoreError,
                       match=r"adversary/params/\S+ \(shape \(.*\)\) is in this config's model "
                             "but not in the checkpoint"):
        checkpointing.restore(manager, _state(_config(lambda_adv=0.02)))


def test_shape_mismatch_is_none_for_equal_trees():
    shapes = checkpointing.leaf_shapes(_state(_config(lambda_adv=0.02)))
    assert len(shapes) > 10 and checkpointing.shape_mismatch(shapes, dict(shapes)) is None


def _corrupt_metadata(step_dir):
    (pathlib.Path(step_dir) / "default" / "_METADATA").write_text("{not json")


@pytest.mark.parametrize("damage", [_truncate_arrays, _delete_metadata, _corrupt_metadata])
def test_damaged_latest_checkpoint_is_set_aside_and_the_previous_restored(tmp_path, caplog,
                                                                          damage):
    config = _config()
    older, newer = _state(config, 0.0), _state(config, 1.0)
    manager = _save(tmp_path, config, {2: older, 4: newer})
    step_dir = tmp_path / "checkpoints" / "4"
    damage(step_dir)
    files_before = _files(step_dir)
    with caplog.at_level(logging.WARNING):
        restored = checkpointing.restore_or_fall_back(manager, _state(config, 5.0),
                                                      str(tmp_path))
    assert int(restored.step) == int(older.step)
    for got, want in zip(jax.tree.leaves(restored.segmentor.params),
                         jax.tree.leaves(older.segmentor.params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "Checkpoint step 4 is damaged" in warning
    aside = tmp_path / checkpointing.DAMAGED_DIR / "4"
    assert _files(aside) == files_before  # Kept, not deleted.
    assert manager.all_steps() == [2] and not step_dir.exists()
    checkpointing.save(manager, 4, newer)  # Training goes on and saves step 4 again.
    manager.wait_until_finished()
    assert manager.all_steps() == [2, 4]


def test_all_checkpoints_damaged_is_refused_after_setting_them_aside(tmp_path):
    config = _config()
    manager = _save(tmp_path, config, {2: _state(config), 4: _state(config)})
    for step in (2, 4):
        _truncate_arrays(tmp_path / "checkpoints" / str(step))
    with pytest.raises(checkpointing.RestoreError, match=r"steps \[4, 2\] are damaged"):
        checkpointing.restore_or_fall_back(manager, _state(config), str(tmp_path))
    assert sorted(os.listdir(tmp_path / checkpointing.DAMAGED_DIR)) == ["2", "4"]
    assert manager.all_steps() == []


def _raise(error):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.mark.parametrize("where", ["metadata", "arrays"])
def test_an_api_error_moves_nothing_and_names_the_error_and_orbax_version(tmp_path, monkeypatch,
                                                                          where):
    config = _config()
    manager = _save(tmp_path, config, {2: _state(config), 4: _state(config, 1.0)})
    files_before = _files(tmp_path / "checkpoints")
    error = TypeError("restore() got an unexpected keyword argument 'args'")
    if where == "metadata":
        monkeypatch.setattr(checkpointing.ocp.StandardCheckpointer, "metadata", _raise(error))
    else:
        monkeypatch.setattr(manager, "restore", _raise(error))
    with pytest.raises(checkpointing.CheckpointAPIError) as raised:
        checkpointing.restore_or_fall_back(manager, _state(config), str(tmp_path))
    message = str(raised.value)
    assert f"step 4's {where} failed with TypeError: restore() got an unexpected keyword" \
        in message
    assert f"orbax-checkpoint {checkpointing.ocp.__version__}" in message
    assert "no checkpoint was moved" in message
    assert isinstance(raised.value, checkpointing.RestoreError)  # Printed without a trace.
    assert _files(tmp_path / "checkpoints") == files_before
    assert manager.all_steps() == [2, 4] and not (tmp_path / checkpointing.DAMAGED_DIR).exists()
