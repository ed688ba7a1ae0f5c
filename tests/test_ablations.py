"""`experiments/ablations.py`: commands, skipping finished runs, one tiny sweep end to end."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from experiments import ablations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "ablations.py")
# Seconds-long runs: narrow nets, 2 devices x 2 images, an eval after every step.
TINY = ["--config.segmentor.width=8", "--config.adversary.width_divisor=16",
        "--config.batch_size=4", "--config.eval_batch_size=64", "--config.log_every_steps=1",
        "--config.eval_every_steps=1", "--config.checkpoint_every_steps=2",
        "--config.num_train_eval_examples=8", "--config.num_image_summaries=0",
        "--config.segmentor.warmup_steps=0", "--config.input.shuffle_buffer=64"]


def run_script(*args, cwd=REPO):
    result = subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                            text=True, timeout=600, check=False)
    return result


def fake_run(run_dir, final_step, eval_step):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"num_train_steps": final_step}, f)
    if eval_step is not None:
        with open(os.path.join(run_dir, "eval_results.json"), "w") as f:
            json.dump({"step": eval_step, "mean_iou": 0.5}, f)


def test_dry_run_prints_one_command_per_variant_and_seed(tmp_path):
    workdir = str(tmp_path / "sweep")
    result = run_script("--config=configs/default.py", "--sweep=encodings", f"--workdir={workdir}",
                        "--seeds=2", "--steps=7", "--dry_run", "--config.segmentor.width=8",
                        "--config.input.crop_size=(32, 32)")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4 * 2
    commands = [shlex.split(line) for line in lines]  # Shell-quoted: the tuple survives.
    expected_encoding = {"baseline": None, "basic": "basic", "product": "product",
                         "scaling": "scaling"}
    seen = set()
    for argv in commands:
        assert argv[:3] == ["python", "-m", "advseg_jax.main"]
        assert "--config=configs/default.py" in argv
        assert "--config.segmentor.width=8" in argv and "--config.input.crop_size=(32, 32)" in argv
        assert "--config.num_train_steps=7" in argv
        workdir_flag = next(a for a in argv if a.startswith("--workdir="))
        variant, seed_dir = os.path.relpath(workdir_flag.split("=", 1)[1], workdir).split(os.sep)
        seed = int(seed_dir.removeprefix("seed_"))
        assert f"--config.seed={seed}" in argv
        encoding = expected_encoding[variant]
        if encoding is None:
            assert "--config.lambda_adv=0.0" in argv
        else:
            assert f"--config.adversary.encoding={encoding}" in argv
        seen.add((variant, seed))
    assert seen == {(v, s) for v in expected_encoding for s in (0, 1)}
    assert not os.path.exists(workdir)  # A dry run writes nothing.


def test_variant_filter_and_sweep_overrides_come_after_passthrough():
    runs = ablations.build_runs("c.py", "lambda", "/w", seeds=1, passthrough=["--config.x=1"],
                                variants=["lambda_0.5", "lambda_0"])
    assert [run.variant for run in runs] == ["lambda_0", "lambda_0.5"]  # The sweep's order.
    assert runs[1].argv[-3:] == ["--config.x=1", "--config.lambda_adv=0.5", "--config.seed=0"]
    assert runs[1].workdir == os.path.join("/w", "lambda_0.5", "seed_0")


def test_unknown_names_fail_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"valid sweeps: \['adversary', 'encodings', "
                                         r"'lambda', 'loss_form', 'stanford_fig4', "
                                         r"'stanford_semi', 'stanford_tuning'\]"):
        ablations.get_sweep("encoding")
    with pytest.raises(ValueError, match="valid variants: .*'product'"):
        ablations.select_variants("encodings", ["prodcut"])
    result = run_script("--config=configs/default.py", "--sweep=nope", "--workdir=/tmp/x",
                        "--dry_run")
    assert result.returncode != 0 and "encodings" in result.stderr and "loss_form" in result.stderr


def test_passthrough_may_not_set_what_the_sweep_sets():
    with pytest.raises(ValueError, match="adversary.encoding"):
        ablations.build_runs("c.py", "encodings", "/w",
                             passthrough=["--config.adversary.encoding=basic"])
    with pytest.raises(ValueError, match="seed"):
        ablations.build_runs("c.py", "loss_form", "/w", passthrough=["--config.seed=3"])


def test_split_passthrough_normalises_absl_forms():
    argv = ["--config=c.py", "--config.a=1", "-config.b", "2", "--noconfig.c", "--sweep=x",
            "--config.d=(1, 2)"]
    assert ablations.split_passthrough(argv) == ["--config.a=1", "--config.b=2",
                                                  "--noconfig.c", "--config.d=(1, 2)"]


def test_finished_runs_are_skipped(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    fake_run(os.path.join(workdir, "saturating", "seed_0"), final_step=5, eval_step=5)
    fake_run(os.path.join(workdir, "saturating", "seed_1"), final_step=5, eval_step=3)
    fake_run(os.path.join(workdir, "non_saturating", "seed_0"), final_step=5, eval_step=None)
    assert ablations.is_finished(os.path.join(workdir, "saturating", "seed_0"))
    assert not ablations.is_finished(os.path.join(workdir, "saturating", "seed_0"), 10)
    assert not ablations.is_finished(os.path.join(workdir, "saturating", "seed_1"))
    assert not ablations.is_finished(os.path.join(workdir, "nowhere"))

    calls = []
    monkeypatch.setattr(ablations.subprocess, "call", lambda argv, **_: calls.append(argv) or 0)
    runs = ablations.build_runs("configs/default.py", "loss_form", workdir, seeds=2)
    # The fake runs exit 0 without finishing (as main does on SIGTERM): reported, not done.
    assert len(ablations.execute(runs, num_train_steps=5)) == 3
    ran = sorted(os.path.relpath(next(a for a in argv if a.startswith("--workdir="))[10:],
                                 workdir) for argv in calls)
    assert ran == [os.path.join("non_saturating", "seed_0"),
                   os.path.join("non_saturating", "seed_1"), os.path.join("saturating", "seed_1")]


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path, data_dir):
    from configs import default
    default_lambda = default.get_config().lambda_adv
    workdir = str(tmp_path / "sweep")
    args = ["--config=configs/default.py", "--sweep=encodings", "--variants=baseline,product",
            f"--workdir={workdir}", "--seeds=1", "--steps=2", f"--config.data_dir={data_dir}",
            *TINY]
    result = run_script(*args)
    assert result.returncode == 0, result.stderr[-5000:]
    for variant in ("baseline", "product"):
        run_dir = os.path.join(workdir, variant, "seed_0")
        assert ablations.is_finished(run_dir, 2), os.listdir(run_dir)
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
        assert config["lambda_adv"] == (0.0 if variant == "baseline" else default_lambda)
        assert config["segmentor"]["width"] == 8 and config["data_dir"] == data_dir
    with open(os.path.join(workdir, "results.json")) as f:
        summary = json.load(f)
    assert summary["sweep"] == "encodings"
    assert [row["variant"] for row in summary["variants"]] == ["baseline", "product"]
    assert all(row["num_seeds"] == 1 and row["mean_iou"]["mean"] is not None
               for row in summary["variants"])
    with open(os.path.join(workdir, "results.md")) as f:
        table = f.read()
    assert "| baseline |" in table and "| product |" in table
    for png in ("encodings_miou.png", "class_accuracy.png"):
        with open(os.path.join(workdir, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # Re-running finds both runs finished: no training, same results.
    logs = {v: os.path.getsize(os.path.join(workdir, v, "seed_0", "run.log"))
            for v in ("baseline", "product")}
    result = run_script(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("finished earlier, skipped") == 2
    assert logs == {v: os.path.getsize(os.path.join(workdir, v, "seed_0", "run.log"))
                    for v in ("baseline", "product")}


def test_stanford_tuning_never_sees_the_test_fold(data_dir):
    """λ is tuned on a held-out fifth of the training split; the test fold is for the final.

    The slices are checked on a real TFDS split (digit_scenes' train): disjoint, and together
    exactly the split.
    """
    import tensorflow_datasets as tfds
    variants = ablations.get_sweep("stanford_tuning")
    assert any(o["lambda_adv"] == 0 for o in variants.values())
    builder = tfds.builder("digit_scenes", data_dir=data_dir)
    whole = [e["image"].tobytes() for e in tfds.as_numpy(builder.as_dataset(split="train"))]
    for overrides in variants.values():
        train_split, eval_split = overrides["train_split"], overrides["eval_split"]
        assert "test" not in train_split + eval_split
        parts = [[e["image"].tobytes() for e in tfds.as_numpy(builder.as_dataset(split=s))]
                 for s in (train_split, eval_split)]
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == sorted(whole)
    assert set(ablations.get_sweep("stanford_fig4")) == {"classical", "adversarial"}


def test_a_variant_that_sets_its_own_length_counts_as_finished(tmp_path, monkeypatch):
    """stanford_tuning's variants run 1,718 steps while the config says 5,720: a finished
    tuning run must be skipped (and not reported as failed) by the config's count."""
    workdir = str(tmp_path)
    runs = ablations.build_runs("configs/stanford_cpu.py", "stanford_tuning", workdir,
                                variants=["lambda_0"])
    fake_run(runs[0].workdir, final_step=1718, eval_step=1718)
    calls = []
    monkeypatch.setattr(ablations.subprocess, "call", lambda argv, **_: calls.append(argv) or 0)
    assert ablations.execute(runs, num_train_steps=5720) == [] and calls == []
