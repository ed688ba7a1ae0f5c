"""The workdir's file format: config comparison, eval histories with torn or repeated lines."""

import logging
import os

from advseg_jax import workdir_io


def test_config_differences_lists_changed_added_and_removed_keys():
    given = {"a": 1, "b": {"c": 2.0, "d": "x"}, "new": True}
    saved = {"a": 1, "b": {"c": 3.0, "d": "x"}, "old": 5}
    assert workdir_io.config_differences(given, saved) == [
        "b.c: 2.0 vs 3.0", "new: True vs None", "old: None vs 5"]


def test_eval_history_skips_a_torn_line_with_a_warning(tmp_path, caplog):
    path = tmp_path / "eval_history.jsonl"
    path.write_text('{"step": 1, "split": "validation"}\n\n{"step": 2, "split": "valid')
    with caplog.at_level(logging.WARNING):
        records = workdir_io.read_eval_history(str(tmp_path))
    assert records == [{"step": 1, "split": "validation"}]
    assert any("line 3" in r.getMessage() for r in caplog.records)
    assert workdir_io.evaluated_steps(str(tmp_path), "validation") == {1}
    assert workdir_io.read_eval_history(str(tmp_path / "missing")) == []


def test_eval_history_keeps_the_last_record_of_a_step_evaluated_again(tmp_path):
    workdir_io.append_eval_history(str(tmp_path), [{"step": 2, "split": "test", "v": 1},
                                                   {"step": 1, "split": "test", "v": 1}])
    workdir_io.append_eval_history(str(tmp_path), [{"step": 2, "split": "test", "v": 2}])
    assert [(r["step"], r["v"]) for r in workdir_io.read_eval_history(str(tmp_path))] == [
        (1, 1), (2, 2)]


def test_config_is_none_before_the_first_run_and_written_atomically(tmp_path):
    assert workdir_io.read_config(str(tmp_path)) is None
    workdir_io.write_config(str(tmp_path), '{"seed": 3}')
    assert workdir_io.read_config(str(tmp_path)) == {"seed": 3}
    assert os.listdir(tmp_path) == [workdir_io.CONFIG]


def test_revision_is_this_checkouts_commit_and_a_new_line_only_when_it_changes(tmp_path,
                                                                              monkeypatch):
    import subprocess
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert workdir_io.code_revision().split("+")[0] == head
    run_dir = str(tmp_path / "run")  # Not there yet: main records before train creates it.
    assert workdir_io.read_revisions(run_dir) == []
    assert workdir_io.write_revision(run_dir) == workdir_io.code_revision()
    workdir_io.write_revision(run_dir)  # A resume with the same code adds nothing.
    assert workdir_io.read_revisions(run_dir) == [workdir_io.code_revision()]
    monkeypatch.setattr(workdir_io, "code_revision", lambda: "abc123")
    workdir_io.write_revision(run_dir)  # Resumed with other code: both are on record.
    assert workdir_io.read_revisions(run_dir)[1:] == ["abc123"]


def test_segments_pair_each_start_with_its_end_and_keep_a_killed_start(tmp_path, caplog):
    run_dir = str(tmp_path / "run")
    assert workdir_io.read_segments(run_dir) == []
    workdir_io.append_segment_event(run_dir, {"end": "orphan", "wall_s": 1.0})  # Ignored.
    workdir_io.append_segment_event(run_dir, {"start": "t0", "command": "a"})  # Then killed.
    workdir_io.append_segment_event(run_dir, {"start": "t1", "command": "a"})
    with open(os.path.join(run_dir, workdir_io.SEGMENTS), "a") as f:
        f.write('{"end": "t2", "wall_s"\n')  # Torn by a kill mid-write: skipped, named.
    workdir_io.append_segment_event(run_dir, {"end": "t3", "wall_s": float("nan"),
                                              "outcome": "finished"})
    with caplog.at_level(logging.WARNING):
        segments = workdir_io.read_segments(run_dir)
    assert segments == [{"start": "t0", "command": "a"},
                        {"start": "t1", "command": "a", "end": "t3", "wall_s": None,
                         "outcome": "finished"}]
    assert any("line 4" in r.getMessage() and workdir_io.SEGMENTS in r.getMessage()
               for r in caplog.records)


def test_latest_checkpoint_step_ignores_saves_under_way(tmp_path):
    assert workdir_io.latest_checkpoint_step(str(tmp_path)) is None
    for name in ("2", "10", "12.orbax-checkpoint-tmp-1733"):
        os.makedirs(tmp_path / workdir_io.CHECKPOINTS / name)
    assert workdir_io.latest_checkpoint_step(str(tmp_path)) == 10
