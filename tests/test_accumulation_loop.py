"""The GPU/TPU accumulation path (`lax.scan`) run by the CPU suite: the whole train step, on the
2-device mesh, with config.accumulation_loop forcing scan or unrolled microbatches, against the
plain K = 1 step; and backend choices taken from the mesh's devices, not JAX's default backend."""

import jax
import numpy as np
import pytest

from advseg_jax import accumulation
from advseg_jax import config_checks
from advseg_jax import microbatch
from advseg_jax import platforms
from advseg_jax import sharding
from advseg_jax import state as state_lib
from advseg_jax import train_step as steps
from advseg_jax.models import exact_taps

from accumulation_helpers import one_step_gradients, relative_error, sgd_one

TOLERANCE = 1e-4
ROWS = 8  # 4 per device on the 2-device mesh: K = 1, 2, 4 at microbatch sizes 4, 2, 1.


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    size = tuple(config.input.crop_size)
    labels = rng.integers(0, config.num_classes, (ROWS, *size)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.3] = 255  # Uneven void counts across rows.
    labels[: ROWS // 2, :4] = 255
    batch = {"image": rng.integers(0, 256, (ROWS, *size, 3)).astype(np.uint8), "label": labels}
    if config.unlabeled_split:
        valid = rng.random((ROWS, *size)) > 0.2
        valid[ROWS // 2:, :, :12] = False  # Uneven crop padding over the two devices.
        hidden = rng.integers(0, config.num_classes, (ROWS, *size)).astype(np.int32)
        batch.update(unlabeled_image=rng.integers(0, 256, (ROWS, *size, 3)).astype(np.uint8),
                     unlabeled_valid=valid, unlabeled_label=np.where(valid, hidden, 255))
    return batch


def _variant(config, name):
    config = sgd_one(config)
    config.batch_size, config.input.crop_size = ROWS, (16, 16)
    config.lambda_adv = 0.0 if name == "baseline" else 0.5
    if name == "semi_fcn":  # Hung et al. 2018: fcn discriminator, unlabeled rows, self-training.
        config.train_split, config.unlabeled_split = "train[:32]", "train[32:64]"
        config.adversary.name, config.adversary.encoding = "fcn", "basic"
        config.adversary.label_resolution = "input"
        config.adversary.fcn_width_divisor = 16  # The same five convolutions, narrow.
        config.input.crop_size = (32, 32)  # The fcn's smallest input.
        config.lambda_adv, config.lambda_adv_unlabeled, config.lambda_semi = 0.01, 0.001, 0.1
        config.unlabeled_batch_size, config.semi_start_step, config.semi_threshold = ROWS, 0, 0.0
    config_checks.validate_config(config)
    return config


@pytest.mark.parametrize("name", ["baseline", "adversarial", "semi_fcn"])
def test_scan_and_unrolled_steps_match_the_plain_step(tiny_config, name):
    """Losses and both models' updates (SGD at rate 1: minus the gradients) of K = 2 and 4
    microbatches, as a scan and unrolled, equal the K = 1 step's to 1e-4."""
    config = _variant(tiny_config, name)
    batch = _batch(config)
    want_grads, want = one_step_gradients(config, 2, ROWS // 2, batch)
    assert want["cross_entropy"] > 0
    for loop in ("scan", "unrolled"):
        config.accumulation_loop = loop
        for k in (2, 4):
            grads, metrics = one_step_gradients(config, 2, ROWS // 2 // k, batch)
            assert set(metrics) == set(want)
            for key, value in want.items():
                assert metrics[key] == pytest.approx(value, rel=TOLERANCE, abs=1e-7), (
                    loop, k, key)
            for model in ("segmentor", "adversary"):
                if want_grads[model] is None:
                    assert grads[model] is None and name == "baseline"
                    continue
                for a, b in zip(jax.tree.leaves(grads[model]),
                                jax.tree.leaves(want_grads[model])):
                    assert relative_error(a, b) < TOLERANCE, (loop, k, model)
                    assert np.max(np.abs(b)) > 0, model  # Every gradient is exercised.


def _lowered_text(config) -> str:
    mesh = sharding.make_mesh()
    segmentor, adversary = state_lib.build_models(config)
    state = state_lib.create_train_state(config, mesh)
    step = steps.make_train_step(config, mesh, segmentor, adversary)
    return step.lower(state, sharding.global_batch(_batch(config), mesh)).as_text()


@pytest.mark.parametrize("loop, has_loop", [("scan", True), ("unrolled", False),
                                            ("auto", False)])
def test_the_setting_decides_the_program_and_auto_follows_the_mesh(tiny_config, monkeypatch,
                                                                   loop, has_loop):
    """A scan lowers to a `while`; unrolled microbatches to none. "auto" on the CPU mesh
    unrolls even when JAX's default backend claims a GPU: the mesh's devices decide."""
    config = _variant(tiny_config, "adversarial")
    config.microbatch_size, config.accumulation_loop = 1, loop  # K = 4 per device.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert ("stablehlo.while" in _lowered_text(config)) == has_loop


class _FakeDevice:
    def __init__(self, platform):
        self.platform = platform


class _FakeMesh:
    def __init__(self, *platform_names):
        self.devices = np.array([_FakeDevice(p) for p in platform_names], dtype=object)


def test_backend_choices_read_the_traced_mesh_platform():
    """Inside a step traced for a GPU mesh: a scan, one chunk, lax convolutions; for a CPU
    mesh: unrolled, cache-sized chunks, padding-heavy convolutions by taps."""
    lhs = jax.ShapeDtypeStruct((1, 8, 8, 4), np.float32)
    rhs = jax.ShapeDtypeStruct((3, 3, 4, 4), np.float32)

    def uses_taps():  # rate 8 on an 8x8 map: every off-centre tap reads padding only.
        conv = exact_taps.conv_general_dilated("auto")
        text = jax.jit(lambda a, b: conv(a, b, (1, 1), "SAME", rhs_dilation=(8, 8),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))).lower(
                lhs, rhs).as_text()
        return "convolution" not in text

    with platforms.tracing_for(_FakeMesh("gpu", "gpu")) as platform:
        assert platform == "gpu" and platforms.current() == "gpu"
        assert not accumulation.unrolled_on()
        assert accumulation.unrolled_on(loop="unrolled")
        assert microbatch.chunk_rows(0, 16, 240, 320) == 16
        assert not uses_taps()
    with platforms.tracing_for(_FakeMesh("cpu")):
        assert accumulation.unrolled_on() and not accumulation.unrolled_on(loop="scan")
        assert microbatch.chunk_rows(0, 16, 240, 320) == 2
        assert uses_taps()
    assert platforms.current("tpu") == "tpu"  # An explicit platform wins.
    with pytest.raises(ValueError, match=r"several platforms \['cpu', 'gpu'\]"):
        platforms.of_mesh(_FakeMesh("cpu", "gpu"))


def test_unknown_accumulation_loop_is_refused_naming_the_key(tiny_config):
    tiny_config.accumulation_loop = "while"
    with pytest.raises(config_checks.ConfigError,
                       match=r"accumulation_loop='while'; valid options: \['auto', 'scan', "
                             r"'unrolled'\]"):
        config_checks.validate_config(tiny_config)
    with pytest.raises(ValueError, match="accumulation_loop='while'"):
        accumulation.unrolled_on(loop="while")


