"""`experiments/fold_analysis.py` on synthetic fold histories with a known effect."""

import itertools
import json
import os
import shutil

import numpy as np
import pytest
from scipy import stats

from experiments import fold_analysis

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH, EPOCHS = 10, (8, 16)
ARMS = ("classical", "adversarial")


def write_fold(fold_dir, finals):
    """finals: arm → per-seed (test class acc., train class acc.) at the final evaluation."""
    final_step = STEPS_PER_EPOCH * EPOCHS[-1]
    for arm, seeds in finals.items():
        for seed, (test, train) in enumerate(seeds):
            run_dir = os.path.join(fold_dir, arm, f"seed_{seed}")
            os.makedirs(run_dir)
            with open(os.path.join(run_dir, "config.json"), "w") as f:
                json.dump({"num_train_steps": final_step, "eval_split": "test",
                           "dataset": "stanford_background/fold0",
                           "lambda_adv": 0.0 if arm == "classical" else 0.5}, f)
            with open(os.path.join(run_dir, "eval_results.json"), "w") as f:
                json.dump({"step": final_step, "mean_class_accuracy": test, "mean_iou": test / 2,
                           "pixel_accuracy": test}, f)
            with open(os.path.join(run_dir, "eval_history.jsonl"), "w") as f:
                for epoch in EPOCHS:
                    scale = epoch / EPOCHS[-1]  # The last evaluation is the final one.
                    for split, value in (("test", test), ("train", train)):
                        f.write(json.dumps({"step": STEPS_PER_EPOCH * epoch, "epoch": epoch,
                                            "split": split, "mean_iou": scale * value / 2,
                                            "pixel_accuracy": scale * value,
                                            "mean_class_accuracy": scale * value}) + "\n")
    with open(os.path.join(fold_dir, "sweep.json"), "w") as f:
        json.dump({"sweep": "stanford_fig4", "variants": {"classical": {"lambda_adv": 0.0},
                                                          "adversarial": {}}, "seeds": [0, 1, 2]},
                  f)


def synthetic_study(study_dir, test_effect, train_effect, num_folds=5, seed=0):
    """Per fold a random level, per run noise; returns arm → [fold, seed] test and train."""
    rng = np.random.default_rng(seed)
    values = {arm: {"test": [], "train": []} for arm in ARMS}
    for fold in range(num_folds):
        level = 0.55 + 0.02 * rng.standard_normal()
        finals = {}
        for arm in ARMS:
            test = level + (test_effect if arm == "adversarial" else 0) + (
                0.01 * rng.standard_normal(3))
            train = level + 0.15 + (train_effect if arm == "adversarial" else 0) + (
                0.01 * rng.standard_normal(3))
            finals[arm] = list(zip(test.tolist(), train.tolist()))
            values[arm]["test"].append(test)
            values[arm]["train"].append(train)
        write_fold(os.path.join(study_dir, f"fold{fold}"), finals)
    return {arm: {k: np.array(v) for k, v in splits.items()} for arm, splits in values.items()}


def test_paired_statistics_match_scipy(tmp_path):
    study = str(tmp_path)
    values = synthetic_study(study, test_effect=0.004, train_effect=-0.06)
    folds = {k: fold_analysis.fold_finals(p) for k, p in fold_analysis.find_folds(study).items()}
    for split in ("test", "train"):
        adversarial = values["adversarial"][split].mean(axis=1)
        classical = values["classical"][split].mean(axis=1)
        result = fold_analysis.compare(folds, split)
        expected = stats.ttest_rel(adversarial, classical)
        np.testing.assert_allclose(list(result["per_fold"].values()), adversarial - classical)
        np.testing.assert_allclose(result["t"], expected.statistic)
        np.testing.assert_allclose(result["p"], expected.pvalue)
        differences = adversarial - classical
        half = stats.t.ppf(0.975, 4) * differences.std(ddof=1) / np.sqrt(5)
        np.testing.assert_allclose(result["ci"], (differences.mean() - half,
                                                  differences.mean() + half))
    text = fold_analysis.write_study(study)
    assert "incomplete" not in text
    # Train: 6 points down, far beyond the noise; the verdict says so with the numbers.
    train = fold_analysis.compare(folds, "train")
    assert train["p"] < 0.001 and "train images the adversarial term lowers" in text
    assert f"{100 * train['mean']:+.2f} points" in text
    assert f"lowers class accuracy by {-100 * train['mean']:.2f} points" in text
    # No p reads as zero: the paired p in scientific notation, and the sampled permutation p
    # at its floor 1 / (100,000 + 1), since no relabelling comes near a 6-point shift.
    assert f"paired t(4) = {train['t']:.2f}, p = {train['p']:.1e}" in text
    assert ("p = 1.0e-05 (100,000 relabellings, seed 0, none as extreme as the observed "
            "difference)" in text)
    assert "p = 0.000" not in text
    for name in ("results.md", "verdict.md", "class_accuracy.png"):
        assert os.path.exists(os.path.join(study, name))
    with open(os.path.join(study, "results.md")) as f:
        table = f.read()
    pooled = 100 * values["adversarial"]["train"].ravel()
    assert ("| all 5 | adversarial | 15 | " in table and
            f"{pooled.mean():.1f} ± {pooled.std(ddof=1):.1f} |" in table)


def test_no_effect_is_said_plainly_with_the_detectable_effect(tmp_path):
    values = synthetic_study(str(tmp_path), test_effect=0.0, train_effect=0.0, seed=3)
    text = fold_analysis.write_study(str(tmp_path))
    folds = {k: fold_analysis.fold_finals(p)
             for k, p in fold_analysis.find_folds(str(tmp_path)).items()}
    test = fold_analysis.compare(folds, "test")
    assert test["p"] > 0.05  # This seed's noise shows no effect.
    assert "test images no effect of the adversarial term is shown" in text
    assert (f"{100 * test['mde']:.2f} points or more would have been detected with 80% power"
            in text)
    assert values["adversarial"]["test"].shape == (5, 3)


def test_the_papers_differences_are_placed_against_the_interval(tmp_path):
    # The reading of Fig. 4: +1.5 points at epoch 100, +3.5 at 300, +1.3 at ~1,000.
    expected = {"test": [(100, 1.5), (300, 3.5), (1000, 1.3)],
                "train": [(100, -9.0), (300, -6.7), (1000, -4.8)]}
    for split, points in expected.items():
        got = fold_analysis.paper_differences(split)
        assert [e for e, _ in got] == [e for e, _ in points]
        np.testing.assert_allclose([d for _, d in got], [d for _, d in points], atol=1e-9)
    text = fold_analysis._paper_text("test", {"ci": (0.0, 0.02)})
    assert ("+1.5 at epoch 100 (inside the interval), +3.5 at epoch 300 (above the interval), "
            "+1.3 at epoch 1,000 (inside the interval)") in text
    text = fold_analysis._paper_text("train", {"ci": (-0.08, -0.05)})
    assert ("-9.0 at epoch 100 (below the interval), -6.7 at epoch 300 (inside the interval), "
            "-4.8 at epoch 1,000 (above the interval)") in text
    # In the verdict: one such line per split, after the split's own sentence.
    synthetic_study(str(tmp_path), test_effect=0.0, train_effect=-0.06)
    verdict = fold_analysis.write_study(str(tmp_path))
    words = verdict.split("## In words")[1]
    assert words.index("On the test images") < words.index("The paper's test-image") < (
        words.index("On the train images")) < words.index("The paper's train-image")


def test_permutation_test_matches_brute_force_and_sampling(monkeypatch):
    groups = [([0.50, 0.52], [0.55, 0.56]), ([0.60, 0.59, 0.61], [0.62, 0.58, 0.66])]
    observed = np.mean([np.mean(a) - np.mean(c) for c, a in groups])
    null = []
    for split0 in itertools.combinations(range(4), 2):
        for split1 in itertools.combinations(range(6), 3):
            stat = 0
            for (c, a), chosen in zip(groups, (split0, split1)):
                pooled = np.array(c + a)
                mask = np.isin(np.arange(len(pooled)), chosen)
                stat += (pooled[mask].mean() - pooled[~mask].mean()) / 2
            null.append(stat)
    expected = np.mean(np.abs(null) >= abs(observed) - 1e-12)
    exact = fold_analysis.permutation_p_value(groups)
    assert exact == {"p": pytest.approx(expected), "permutations": 6 * 20, "exact": True}
    monkeypatch.setattr(fold_analysis, "MAX_PERMUTATIONS", 100)  # Forces sampling.
    sampled = fold_analysis.permutation_p_value(groups)
    assert not sampled["exact"] and abs(sampled["p"] - expected) < 0.15
    assert sampled == fold_analysis.permutation_p_value(groups)  # Fixed seed.


def test_minimal_detectable_effect_has_the_stated_power():
    mde = fold_analysis.minimal_detectable_effect(sd=0.01, n=5)
    rng = np.random.default_rng(1)
    samples = mde + 0.01 * rng.standard_normal((20_000, 5))
    rejected = stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
    assert abs(rejected.mean() - 0.8) < 0.015
    # Above the normal-approximation (z) effect, which ignores the t tails of 4 df.
    assert mde > (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 0.01 / np.sqrt(5)


def test_only_fold_0_says_the_study_is_incomplete(tmp_path):
    study = str(tmp_path / "study")
    fold0 = os.path.join(REPO, "experiments", "results", "stanford_fig4_fold0")
    text = fold_analysis.write_study(study, fold0=fold0)
    assert "Study incomplete: 1 of 5 folds" in text
    assert "no interval or paired t-test" in text and "20 relabellings, exact" in text
    with open(os.path.join(study, "results.md")) as f:
        assert f.readline().startswith("# Stanford Background, classical vs adversarial: "
                                       "1 of 5 folds — incomplete")


def test_missing_folds_or_arms_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="No fold folders"):
        fold_analysis.find_folds(str(tmp_path))
    write_fold(str(tmp_path / "fold1"), {"classical": [(0.5, 0.6)]})
    with pytest.raises(ValueError, match=r"No fold .* has 3 finished runs of each arm .*fold 1 "
                       r"waits for its runs \(finished: classical 1 of 3, adversarial 0 of 3\)"):
        fold_analysis.write_study(str(tmp_path))
    with pytest.raises(ValueError, match=r"fold1 has no finished runs of \['adversarial'\]"):
        fold_analysis.fold_finals(str(tmp_path / "fold1"))


def test_a_fold_still_running_is_named_and_left_out(tmp_path):
    study = str(tmp_path)
    synthetic_study(study, test_effect=0.01, train_effect=-0.05, num_folds=2)
    alone = fold_analysis.write_study(study)
    # Fold 2 has one adversarial run finished and one still running: no classical run yet.
    write_fold(os.path.join(study, "fold2"), {"adversarial": [(0.9, 0.9), (0.9, 0.9)]})
    with open(os.path.join(study, "fold2", "adversarial", "seed_1", "eval_results.json"),
              "w") as f:
        json.dump({"step": 1, "mean_class_accuracy": 0.9}, f)
    text = fold_analysis.write_study(study)
    assert ("fold 2 waits for its runs (finished: classical 0 of 3, adversarial 1 of 3)"
            in text)
    assert text.replace(text.splitlines()[4] + "\n\n", "", 1) == alone
    with open(os.path.join(study, "results.md")) as f:
        assert "fold 2 waits for its runs" in f.read()


def test_committed_study_regenerates_from_its_histories(tmp_path, monkeypatch):
    """The committed tables and verdict must be what the script makes of the committed runs,
    so a run committed without re-running the analysis (or an edit by hand) fails here."""
    committed = os.path.join(REPO, "experiments", "results", "stanford_fig4_5fold")
    fold0 = os.path.join(REPO, "experiments", "results", "stanford_fig4_fold0")
    study = str(tmp_path / "study")
    shutil.copytree(committed, study)
    for name in ("results.md", "verdict.md", "class_accuracy.png"):
        os.remove(os.path.join(study, name))
    # The committed outputs were written from the repository root with these arguments (the
    # runs of the frozen revision 7b43d2c predate revision.txt).
    monkeypatch.chdir(REPO)
    fold_analysis.write_study(study, fold0=os.path.relpath(fold0, REPO), revision="7b43d2c")
    for name in ("verdict.md", "results.md"):
        with open(os.path.join(study, name)) as f:
            regenerated = f.read().replace(study, os.path.relpath(committed, REPO))
        with open(os.path.join(committed, name)) as f:
            assert regenerated == f.read(), f"{name} is stale: re-run fold_analysis.py"
    with open(os.path.join(study, "class_accuracy.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
