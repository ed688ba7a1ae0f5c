"""`experiments/ablations.py`: commands, skipping finished runs, one tiny sweep end to end."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from advseg_jax import host_info
from advseg_jax import workdir_io
from experiments import ablations
from dataset_records import records

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


class FakeProcess:
    """A launched run that has already exited with `code`."""

    def __init__(self, code):
        self.returncode = code

    def poll(self):
        return self.returncode


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
    monkeypatch.setattr(ablations, "_launch", lambda run, log, cpus: calls.append(run.argv) or
                        FakeProcess(0))
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
        # main recorded the code it ran, and results.json carries it.
        assert workdir_io.read_revisions(run_dir) == [workdir_io.code_revision()]
        # ... and the segment: the command the sweep launched, this host, the outcome.
        (segment,) = workdir_io.read_segments(run_dir)
        assert segment["outcome"] == "finished" and segment["wall_s"] > 0
        assert segment["command"].startswith("python -m advseg_jax.main --config=")
        assert f"--workdir={run_dir}" in segment["command"]
        assert segment["host"]["cpu"] == host_info.cpu_model()
        assert segment["revision"] == workdir_io.code_revision()
    with open(os.path.join(workdir, "results.json")) as f:
        summary = json.load(f)
    assert summary["sweep"] == "encodings"
    assert summary["revision"] == workdir_io.code_revision()
    assert [row["variant"] for row in summary["variants"]] == ["baseline", "product"]
    assert all(row["num_seeds"] == 1 and row["mean_iou"]["mean"] is not None
               for row in summary["variants"])
    with open(os.path.join(workdir, "results.md")) as f:
        table = f.read()
    assert "| baseline |" in table and "| product |" in table
    with open(os.path.join(workdir, "run_segments.md")) as f:
        runs = f.read()
    assert "### baseline/seed_0" in runs and "### product/seed_0" in runs
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
    whole = [e["image"].tobytes() for e in records(builder, "train")]
    for overrides in variants.values():
        train_split, eval_split = overrides["train_split"], overrides["eval_split"]
        assert "test" not in train_split + eval_split
        parts = [[e["image"].tobytes() for e in records(builder, s)]
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
    monkeypatch.setattr(ablations, "_launch", lambda run, log, cpus: calls.append(run.argv) or
                        FakeProcess(0))
    assert ablations.execute(runs, num_train_steps=5720) == [] and calls == []


# A stand-in for `advseg_jax.main`: records its CPUs and when it ran, then finishes its run
# (config.json, then eval_results.json at the final step) or fails.
_CHILD = """
import json, os, sys, time
run_dir, fail = sys.argv[1], sys.argv[2] == "fail"
os.makedirs(run_dir, exist_ok=True)
start = time.time()
time.sleep(1.0)
json.dump({"cpus": sorted(os.sched_getaffinity(0)), "start": start, "end": time.time()},
          open(os.path.join(run_dir, "trace.json"), "w"))
if fail:
    sys.exit("boom: this run fails")
json.dump({"num_train_steps": 5}, open(os.path.join(run_dir, "config.json"), "w"))
json.dump({"step": 5}, open(os.path.join(run_dir, "eval_results.json"), "w"))
"""


def child_runs(workdir, count, failing=()):
    return [ablations.Run("v", seed, os.path.join(workdir, f"seed_{seed}"),
                          ["-c", _CHILD, os.path.join(workdir, f"seed_{seed}"),
                           "fail" if seed in failing else "ok"]) for seed in range(count)]


def read_trace(run):
    with open(os.path.join(run.workdir, "trace.json")) as f:
        return json.load(f)


def test_cpu_shares_are_disjoint_and_cover_the_cpus():
    assert ablations.cpu_shares(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert ablations.cpu_shares(3, [5, 1, 9]) == [[1], [5], [9]]
    with pytest.raises(ValueError, match=r"--parallel=3 .* 2 CPUs"):
        ablations.cpu_shares(3, [0, 1])
    with pytest.raises(ValueError, match="--parallel=0"):
        ablations.cpu_shares(0, [0, 1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to pin 2 runs")
def test_parallel_runs_overlap_on_disjoint_cpus_and_failures_are_reported(tmp_path):
    runs = child_runs(str(tmp_path), 4, failing={2})
    failed = ablations.execute(runs, parallel=2)
    assert failed == [runs[2]]
    traces = [read_trace(run) for run in runs]
    shares = ablations.cpu_shares(2)
    for trace in traces:
        assert trace["cpus"] in shares  # Each run pinned to one slot's share, not all CPUs.
    # Runs 0 and 1 start together (one per slot), on different shares, and overlap in time.
    assert traces[0]["cpus"] != traces[1]["cpus"]
    assert traces[1]["start"] < traces[0]["end"] and traces[0]["start"] < traces[1]["end"]
    # Never more than two at once: at any run's start, at most one other is running.
    for trace in traces:
        others = [t for t in traces if t is not trace and t["start"] <= trace["start"] < t["end"]]
        assert len(others) <= 1
        assert all(other["cpus"] != trace["cpus"] for other in others)
    assert all(ablations.is_finished(run.workdir) for i, run in enumerate(runs) if i != 2)
    with open(os.path.join(runs[2].workdir, "run.log")) as f:
        assert "boom: this run fails" in f.read()

    # A second pass skips the three finished runs and re-runs only the failed one.
    mtimes = [os.path.getmtime(os.path.join(run.workdir, "trace.json")) for run in runs]
    assert ablations.execute(runs, parallel=2) == [runs[2]]
    after = [os.path.getmtime(os.path.join(run.workdir, "trace.json")) for run in runs]
    assert [a == b for a, b in zip(mtimes, after)] == [True, True, False, True]


def test_parallel_one_runs_in_turn_unpinned(tmp_path):
    runs = child_runs(str(tmp_path), 2)
    assert ablations.execute(runs) == []
    first, second = (read_trace(run) for run in runs)
    assert first["end"] <= second["start"]
    assert first["cpus"] == second["cpus"] == sorted(os.sched_getaffinity(0))
