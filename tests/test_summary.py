"""`python -m advseg_jax.summary`: counts and shapes without data, as JSON and as tables."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conv(k, cin, cout):
    return k * k * cin * cout + cout


# By hand from the architectures (the same sums as tests/test_paper_models.py).
VOC_DILATED8 = (14_714_688 + conv(7, 512, 4096) + conv(1, 4096, 4096) + conv(1, 4096, 21)
                + 7 * conv(3, 21, 21) + conv(1, 21, 21))
VOC_LARGEFOV = (conv(3, 63, 96) + conv(3, 96, 128) + conv(3, 128, 128) + conv(3, 128, 256)
                + conv(3, 256, 256) + conv(3, 256, 512) + conv(3, 512, 1))
STANFORD_MULTISCALE = conv(7, 3, 16) + conv(7, 16, 64) + conv(7, 64, 256) + conv(1, 768, 8)


def run_summary(*flags):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "advseg_jax.summary", *flags], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_voc_json_counts_match_hand_counts():
    out = run_summary("--config=configs/voc.py", '--config.input.crop_size=(64,64)',
                      "--format=json")
    summary = json.loads(out)  # stdout must be exactly one JSON object.
    seg, adv = summary["segmentor"], summary["adversary"]
    assert seg == {"name": "dilated8", "params": VOC_DILATED8,
                   "input_shape": [1, 64, 64, 3], "output_shape": [1, 8, 8, 21]}
    assert adv["name"] == "largefov" and adv["built"]
    assert adv["params"] == VOC_LARGEFOV  # Product: 3C = 63 input channels.
    assert adv["input_shapes"] == {"images": [1, 8, 8, 3], "label_maps": [1, 8, 8, 63]}
    assert adv["output_shape"] == [1]


def test_stanford_tables_and_baseline_without_adversary():
    out = run_summary("--config=configs/stanford_background.py", "--config.lambda_adv=0")
    assert "MultiscaleNet" in out and "conv3" in out
    assert f"Segmentor params: {STANFORD_MULTISCALE:,}" in out
    assert "not built" in out and "Adversary params" not in out
    summary = json.loads(run_summary("--config=configs/stanford_background.py",
                                     "--config.lambda_adv=0", "--format=json"))
    assert summary["adversary"]["built"] is False
    assert summary["segmentor"]["output_shape"] == [1, 60, 80, 8]  # 240x320 crop, stride 4.
