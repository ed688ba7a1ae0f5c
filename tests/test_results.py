"""`experiments/results.py` on fabricated run directories with known numbers."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from advseg_jax import workdir_io
from experiments import ablations
from experiments import results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# variant → per-seed final (mIoU, pixel acc, class acc).
FINAL = {"baseline": [(0.50, 0.90, 0.60), (0.54, 0.91, 0.64), (0.49, 0.89, 0.58)],
         "product": [(0.56, 0.92, 0.66), (0.58, 0.93, 0.69)]}
STEPS = 30


def write_run(run_dir, scores, lambda_adv, final_step=STEPS, last_eval=STEPS):
    os.makedirs(run_dir)
    config = {"num_train_steps": final_step, "dataset": "digit_scenes", "lambda_adv": lambda_adv,
              "eval_split": "validation", "train_split": "train"}
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f)
    miou, pixel, klass = scores
    with open(os.path.join(run_dir, "eval_results.json"), "w") as f:
        json.dump({"step": last_eval, "mean_iou": miou, "pixel_accuracy": pixel,
                   "mean_class_accuracy": klass, "class_names": ["background", "digit_0"],
                   "per_class_iou": [miou, None]}, f)
    with open(os.path.join(run_dir, "eval_history.jsonl"), "w") as f:
        for step in (10, 20, 30):
            for split, value in (("validation", klass * step / 30), ("train", klass + 0.1)):
                f.write(json.dumps({"step": step, "split": split, "mean_iou": miou,
                                    "mean_class_accuracy": value}) + "\n")


@pytest.fixture
def sweep_dir(tmp_path):
    for variant, runs in FINAL.items():
        for seed, scores in enumerate(runs):
            write_run(str(tmp_path / variant / f"seed_{seed}"), scores,
                      0.0 if variant == "baseline" else 0.5)
    # Unfinished: stopped at step 20 of 30; must not enter any mean.
    write_run(str(tmp_path / "product" / "seed_2"), (0.0, 0.0, 0.0), 0.5, last_eval=20)
    manifest = {"sweep": "encodings", "variants": {"baseline": {"lambda_adv": 0.0},
                                                   "product": {"adversary.encoding": "product"}},
                "seeds": [0, 1, 2]}
    with open(tmp_path / "sweep.json", "w") as f:
        json.dump(manifest, f)
    return str(tmp_path)


def test_mean_and_std_over_finished_seeds_match_numpy(sweep_dir):
    summary = results.write_results(sweep_dir)
    rows = {row["variant"]: row for row in summary["variants"]}
    assert list(rows) == ["baseline", "product"]
    for variant, runs in FINAL.items():
        row = rows[variant]
        assert row["num_seeds"] == len(runs) and row["seeds"] == list(range(len(runs)))
        for i, metric in enumerate(results.METRICS):
            values = np.array([scores[i] for scores in runs])
            assert row[metric]["mean"] == pytest.approx(values.mean())
            assert row[metric]["std"] == pytest.approx(values.std(ddof=1))
    assert rows["product"]["unfinished_seeds"] == [2]
    assert rows["product"]["overrides"] == {"adversary.encoding": "product"}
    with open(os.path.join(sweep_dir, "results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))


def test_markdown_table(sweep_dir):
    results.write_results(sweep_dir)
    with open(os.path.join(sweep_dir, "results.md")) as f:
        table = f.read()
    baseline = np.array(FINAL["baseline"]) * 100
    mean, std = baseline[:, 0].mean(), baseline[:, 0].std(ddof=1)
    line = next(row for row in table.splitlines() if row.startswith("| baseline |"))
    assert f"{mean:.1f} ± {std:.1f}" in line
    assert line.rstrip().endswith("| 3 | — |")  # Three seeds; no paper number for digit_scenes.
    product = next(row for row in table.splitlines() if row.startswith("| product |"))
    assert "| 2 (+1 unfinished) |" in product and "`adversary.encoding=product`" in product


def test_runs_differing_in_an_unswept_key_are_flagged(sweep_dir):
    assert results.summarize(sweep_dir)["differing_config_keys"] == []
    path = os.path.join(sweep_dir, "product", "seed_1", "config.json")
    with open(path) as f:
        config = json.load(f)
    config["segmentor"] = {"width": 16}  # E.g. the default config was edited mid-sweep.
    with open(path, "w") as f:
        json.dump(config, f)
    results.write_results(sweep_dir)
    with open(os.path.join(sweep_dir, "results.md")) as f:
        text = f.read()
    runs = sum(row["num_seeds"] for row in results.summarize(sweep_dir)["variants"])  # Finished.
    assert ("**Warning:** the runs also differ in `segmentor.width` (16 in 1 run; absent in "
            f"{runs - 1} runs)") in text


def test_plots_are_written(sweep_dir):
    results.write_results(sweep_dir)
    for name in ("encodings_miou.png", "class_accuracy.png", "eval_curves.png"):
        with open(os.path.join(sweep_dir, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_one_seed_has_no_std_and_no_manifest_is_fine(tmp_path):
    write_run(str(tmp_path / "only" / "seed_0"), (0.3, 0.8, 0.4), 0.5)
    summary = results.write_results(str(tmp_path))
    (row,) = summary["variants"]
    assert row["mean_iou"] == {"mean": 0.3, "std": None, "values": [0.3]}
    assert summary["sweep"] is None
    with open(tmp_path / "results.md") as f:
        assert "| 30.0 |" in f.read()


def test_history_keeps_the_last_record_of_a_repeated_eval(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "eval_history.jsonl", "w") as f:
        for value in (0.1, 0.2):  # A resumed run evaluated step 5 twice.
            f.write(json.dumps({"step": 5, "split": "train", "mean_class_accuracy": value}) + "\n")
    (record,) = workdir_io.read_eval_history(str(run_dir))
    assert math.isclose(record["mean_class_accuracy"], 0.2)


def test_a_half_written_last_history_line_is_skipped(tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / "eval_history.jsonl", "w") as f:
        f.write(json.dumps({"step": 5, "split": "train", "mean_class_accuracy": 0.3}) + "\n")
        f.write('{"step": 10, "split": "tr')  # The run was killed mid-write.
    with caplog.at_level(logging.WARNING):
        (record,) = workdir_io.read_eval_history(str(run_dir))
    assert record["step"] == 5
    assert "Skipping unreadable line 2" in caplog.text


def test_cli(sweep_dir):
    result = subprocess.run([sys.executable, "experiments/results.py", f"--workdir={sweep_dir}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| baseline |" in result.stdout
    assert os.path.exists(os.path.join(sweep_dir, "results.md"))


# A fabricated Fig. 4 sweep: per seed, (train, eval) class accuracy at epochs 8 and 16.
FIG4 = {"classical": [((0.70, 0.55), (0.80, 0.58)), ((0.72, 0.56), (0.84, 0.57))],
        "adversarial": [((0.66, 0.56), (0.74, 0.60)), ((0.64, 0.57), (0.76, 0.61))]}


@pytest.fixture
def fig4_dir(tmp_path):
    for variant, seeds in FIG4.items():
        for seed, points in enumerate(seeds):
            run_dir = tmp_path / variant / f"seed_{seed}"
            os.makedirs(run_dir)
            config = {"num_train_steps": 20, "dataset": "stanford_background/fold0",
                      "lambda_adv": 0.0 if variant == "classical" else 0.5,
                      "eval_split": "test", "train_split": "train"}
            (run_dir / "config.json").write_text(json.dumps(config))
            (run_dir / "eval_results.json").write_text(json.dumps(
                {"step": 20, "mean_iou": 0.4, "pixel_accuracy": 0.7,
                 "mean_class_accuracy": points[-1][1]}))
            with open(run_dir / "eval_history.jsonl", "w") as f:
                for (train_value, eval_value), step in zip(points, (10, 20)):
                    for split, value in (("train", train_value), ("test", eval_value)):
                        f.write(json.dumps({"step": step, "epoch": step * 0.8, "split": split,
                                            "mean_iou": 0.4, "pixel_accuracy": 0.7,
                                            "mean_class_accuracy": value}) + "\n")
    manifest = {"sweep": "stanford_fig4", "config": "configs/stanford_cpu.py",
                "passthrough": ["--config.data_dir=/home/me/tfds",
                                "--config.manual_dir=/data/stanford", "--config.dtype=float32"],
                "variants": {"classical": {"lambda_adv": 0.0}, "adversarial": {}},
                "seeds": [0, 1]}
    (tmp_path / "sweep.json").write_text(json.dumps(manifest))
    (tmp_path / "verdict.md").write_text("## Verdict\n\nNo effect beyond the spread.\n")
    return str(tmp_path)


def test_curves_by_epoch_match_numpy(fig4_dir):
    summary = results.write_results(fig4_dir)
    for variant, seeds in FIG4.items():
        for split_index, split in enumerate(("train", "eval")):
            points = summary["curves"][variant][split]
            assert [p["epoch"] for p in points] == [8.0, 16.0]
            for i, point in enumerate(points):
                values = np.array([seed[i][split_index] for seed in seeds])
                stats = point["mean_class_accuracy"]
                assert stats["mean"] == pytest.approx(values.mean())
                assert stats["std"] == pytest.approx(values.std(ddof=1))


def test_fig4_markdown_has_paper_effects_recipe_and_verdict(fig4_dir):
    summary = results.write_results(fig4_dir)
    with open(os.path.join(fig4_dir, "results.md")) as f:
        text = f.read()
    # Paper values (Fig. 4, ~epoch 1000, validation) on the right rows.
    assert "| classical |" in text and "Class acc. 62.1 |" in text and "Class acc. 63.4 |" in text
    # Effect = difference of seed means at the final evaluation, in points.
    eval_effect = 100 * (np.mean([0.60, 0.61]) - np.mean([0.58, 0.57]))
    train_effect = 100 * (np.mean([0.74, 0.76]) - np.mean([0.80, 0.84]))
    assert f"adversarial: eval {eval_effect:+.1f}" in text
    assert f"train {train_effect:+.1f}" in text
    assert "No effect beyond the spread." in text
    # Machine paths become placeholders in the committed recipe; other flags stay.
    recipe = summary["recipe"]
    assert recipe["passthrough"] == ["--config.data_dir=DATA_DIR",
                                     "--config.manual_dir=MANUAL_DIR", "--config.dtype=float32"]
    assert "--sweep=stanford_fig4" in recipe["command"] and "--seeds=2" in recipe["command"]
    # Each variant's single-run command is the runner's own command for that run.
    runs = ablations.build_runs("configs/stanford_cpu.py", "stanford_fig4", "OUT", seeds=2,
                                passthrough=recipe["passthrough"])
    for run in runs:
        command = recipe["run_commands"][run.variant].replace("SEED", str(run.seed))
        assert command == " ".join(["python", *run.argv])
    assert "/home/me" not in json.dumps(summary)
    with open(os.path.join(fig4_dir, "class_accuracy.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_export_keeps_only_what_a_committed_sweep_needs(fig4_dir, tmp_path):
    run_dir = os.path.join(fig4_dir, "classical", "seed_0")
    os.makedirs(os.path.join(run_dir, "checkpoints", "20"))
    open(os.path.join(run_dir, "events.out.tfevents.1"), "w").close()
    workdir_io.write_data_splits(run_dir, {"train[:2]": ["a.jpg", "b.jpg"]})  # Semi-supervised.
    unfinished = os.path.join(fig4_dir, "adversarial", "seed_2")
    write_run(unfinished, (0.1, 0.1, 0.1), 0.5, last_eval=10)
    destination = str(tmp_path / "exported")
    results.export(fig4_dir, destination)
    kept = sorted(os.path.relpath(os.path.join(d, f), destination)
                  for d, _, files in os.walk(destination) for f in files)
    runs = [f"{v}/seed_{k}/{name}" for v in FIG4 for k in range(2) for name in results.RUN_FILES
            if name not in (workdir_io.DATA_SPLITS, workdir_io.REVISION, workdir_io.SEGMENTS)]
    assert kept == sorted(runs + ["sweep.json", "verdict.md",
                                  f"classical/seed_0/{workdir_io.DATA_SPLITS}"])
    shutil.rmtree(unfinished)  # Left out of the export, so out of the comparison too.
    assert results.summarize(destination)["curves"] == results.summarize(fig4_dir)["curves"]


def test_per_class_table_is_labelled_with_class_names(sweep_dir):
    summary = results.write_results(sweep_dir)
    lines = results.markdown(summary).splitlines()
    header = lines.index("| Variant | background | digit_0 |")
    baseline = [m for m, _, _ in FINAL["baseline"]]
    expected = f"{100 * np.mean(baseline):.1f} ± {100 * np.std(baseline, ddof=1):.1f}"
    assert lines[header + 2] == f"| baseline | {expected} | — |"  # digit_0 never occurs: null.
    row = next(r for r in summary["variants"] if r["variant"] == "product")
    assert list(row["per_class_iou"]) == ["background", "digit_0"]


def test_revisions_come_from_the_runs_or_the_flag_and_differences_warn(sweep_dir, caplog):
    summary = results.summarize(sweep_dir)
    assert summary["revisions"] == ["unrecorded"] and summary["revision"] is None
    summary = results.summarize(sweep_dir, revision="7b43d2c")  # Runs that predate the file.
    assert summary["revisions"] == ["7b43d2c"] and summary["revision"] == "7b43d2c"
    with open(os.path.join(sweep_dir, "product", "seed_0", workdir_io.REVISION), "w") as f:
        f.write("f00d\n")
    with caplog.at_level(logging.WARNING):
        summary = results.write_results(sweep_dir, revision="7b43d2c")
    assert summary["revisions"] == ["7b43d2c", "f00d"] and summary["revision"] is None
    assert any("2 code revisions" in r.getMessage() for r in caplog.records)
    with open(os.path.join(sweep_dir, "results.json")) as f:
        assert json.load(f)["revisions"] == ["7b43d2c", "f00d"]
    with open(os.path.join(sweep_dir, "results.md")) as f:
        assert "Code revisions (the runs differ): 7b43d2c, f00d." in f.read()


def test_only_the_first_lambda_zero_arm_is_drawn_black():
    rows = [{"lambda_adv": 0.0}, {"lambda_adv": 0.01}, {"lambda_adv": 0.0}, {}]
    assert results.line_colours(rows) == ["k", "C1", "C2", "C3"]
    assert len(set(results.line_colours(rows))) == len(rows)
    assert results.line_colours([{"lambda_adv": 0.5}]) == ["C0"]
