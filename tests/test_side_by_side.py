"""bench/side_by_side.py's parts: the revision export and the worker's config overrides."""

import importlib.util
import os
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(_ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_config_applies_overrides_and_skips_unknown_keys():
    worker = _load("_step_worker")
    path = os.path.join(_ROOT, "configs", "default.py")
    config = worker._config(path, "baseline", ["batch_size=4", "input.crop_size=(32, 40)",
                                               "no_such_key_in_this_tree=1"])
    assert config.batch_size == 4 and tuple(config.input.crop_size) == (32, 40)
    assert config.lambda_adv == 0 and "no_such_key_in_this_tree" not in config
    config = worker._config(path, "adversarial", ["lambda_adv=0.0"])
    assert config.lambda_adv == 0.5  # The adversarial variant always runs an adversary.


def test_program_digest_ignores_source_lines_and_sees_the_program():
    """Equal digests mean one program: the same ops from other source lines or under another
    function name hash alike; another constant does not."""
    import jax
    import jax.numpy as jnp
    worker = _load("_step_worker")
    x = jnp.ones((4,))

    def step(v):
        return jnp.tanh(v) * 2.0
    first = jax.jit(step)

    def step(v):  # noqa: F811  # The same name and ops, other source lines.
        return jnp.tanh(v) * 2.0
    same = jax.jit(step)

    def step(v):  # noqa: F811
        return jnp.tanh(v) * 3.0
    other = jax.jit(step)

    def renamed_step(v):
        return jnp.tanh(v) * 2.0
    digest = worker.program_digest(first.lower(x))
    assert len(digest) == 64
    assert worker.program_digest(same.lower(x)) == digest
    assert worker.program_digest(jax.jit(renamed_step).lower(x)) == digest
    assert worker.program_digest(other.lower(x)) != digest


def test_export_unpacks_the_revision_and_rejects_unknown_ones(tmp_path):
    if not os.path.isdir(os.path.join(_ROOT, ".git")) and not os.path.isfile(
            os.path.join(_ROOT, ".git")):
        pytest.skip("not a git checkout")
    side_by_side = _load("side_by_side")
    side_by_side.export_revision("HEAD", str(tmp_path))
    assert os.path.isfile(tmp_path / "advseg_jax" / "train_step.py")
    with pytest.raises(SystemExit, match="--rev='no-such-revision'"):
        side_by_side.export_revision("no-such-revision", str(tmp_path))


def test_profile_attributes_thunks_to_model_code():
    """bench/profile_step.py maps an HLO instruction to the layer and pass that produced it."""
    sys.path.insert(0, os.path.join(_ROOT, "bench"))  # profile_step imports _step_worker.
    profile = _load("profile_step")
    hlo = (
        '  %ynn_fusion.3 = f32[2,8]{1,0} fusion(%p), kind=kCustom, metadata={op_name="jit(step)/'
        'transpose(jvp(MultiscaleNet))/stack/conv3/conv_general_dilated" source_file="x.py"}\n'
        '  ROOT %add.1 = f32[] add(%a, %b), metadata={op_name="jit(step)/jvp(Net)/head/add"}\n'
        '  %copy.2 = f32[4]{0} copy(%c)\n')
    names = profile._op_names(hlo)
    assert names == {
        "ynn_fusion.3": "jit(step)/transpose(jvp(MultiscaleNet))/stack/conv3/conv_general_dilated",
        "add.1": "jit(step)/jvp(Net)/head/add"}
    assert profile._group(names["ynn_fusion.3"]) == "backward stack/conv3/conv_general_dilated"
    assert profile._group(names["add.1"]) == "forward  Net/head/add"


@pytest.mark.slow
def test_pipeline_side_by_side_input_rates_of_both_trees(data_dir):
    """`pipeline_side_by_side.py input`: each tree's rate from its own data_dir, every round kept,
    the speed-up the ratio of the best rates (HEAD against itself: both trees measured)."""
    if not os.path.isdir(os.path.join(_ROOT, ".git")) and not os.path.isfile(
            os.path.join(_ROOT, ".git")):
        pytest.skip("not a git checkout")
    import json
    import subprocess
    result = subprocess.run(
        [sys.executable, os.path.join(_ROOT, "bench", "pipeline_side_by_side.py"), "input",
         "--rev=HEAD", "--config=configs/default.py", f"--data_dir={data_dir}",
         f"--rev_data_dir={data_dir}", "--rounds=2", "--batches=2", "--set", "batch_size=4"],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["mode"] == "input" and summary["overrides"] == ["batch_size=4"]
    for tree in ("revision", "current"):
        rates = [r["images_per_s"] for r in summary[tree]["rounds"]]
        assert len(rates) == 2 and min(rates) > 0
        assert summary[tree]["best_images_per_s"] == max(rates)
    assert summary["speedup_best"] == pytest.approx(
        summary["current"]["best_images_per_s"] / summary["revision"]["best_images_per_s"])
