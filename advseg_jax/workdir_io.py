"""The workdir's files: their names, their format, and the only code that reads or writes them.

    <workdir>/config.json           the run's config (written at every start)
    <workdir>/eval_results.json     the latest evaluation of `config.eval_split`
    <workdir>/eval_history.jsonl    every evaluation, one JSON object a line, appended
    <workdir>/best_checkpoint.json  {metric, step, value} of the best evaluated checkpoint
    <workdir>/data_splits.json      the labeled and unlabeled splits and their example ids
    <workdir>/revision.txt          the git revision of the code of each start, one a line
    <workdir>/segments.jsonl        each start and end of the run: time, command, host, outcome
    <workdir>/checkpoints/<step>/   orbax checkpoints (`checkpointing.py`)
    <workdir>/lock                  pid, host and start of the run holding it (`workdir_lock.py`)
    <sweep>/sweep.json              an ablation sweep's manifest (`experiments/ablations.py`)

JSON files are written atomically (temporary file, then rename), so a reader (the ablation
runner, a results script) never sees half a file; NaN scores are written as null. JAX is not
imported: the results scripts read workdirs without loading it.
"""

import json
import math
import os
import subprocess
from typing import Any, Dict, Iterable, Iterator, List, Optional

from absl import logging

from advseg_jax import dicts

CONFIG = "config.json"
EVAL_RESULTS = "eval_results.json"
EVAL_HISTORY = "eval_history.jsonl"
BEST_CHECKPOINT = "best_checkpoint.json"
DATA_SPLITS = "data_splits.json"
REVISION = "revision.txt"
SEGMENTS = "segments.jsonl"
CHECKPOINTS = "checkpoints"
SWEEP_MANIFEST = "sweep.json"
LOCK = "lock"


def json_ready(value: Any) -> Any:
    """NaN → None (JSON null), recursively; numpy scalars → Python numbers."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar.
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path: str, value: Any) -> None:
    """Atomic: the file is either the old or the new content, never a part."""
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(json_ready(value), f, indent=1)
    os.replace(temporary, path)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def write_config(workdir: str, config_json: str) -> None:
    """`config_json`: `ConfigDict.to_json_best_effort()` (tuples become lists)."""
    temporary = os.path.join(workdir, CONFIG + ".tmp")
    with open(temporary, "w") as f:
        f.write(config_json)
    os.replace(temporary, os.path.join(workdir, CONFIG))


def read_config(workdir: str) -> Optional[dict]:
    """The config.json of the workdir's last run, None if there is none."""
    path = os.path.join(workdir, CONFIG)
    return read_json(path) if os.path.exists(path) else None


def config_differences(given: dict, saved: dict) -> List[str]:
    """'key: given vs saved' for every flattened key whose value differs (JSON-ready dicts)."""
    given, saved = dicts.flatten(given), dicts.flatten(saved)
    return [f"{key}: {given.get(key)!r} vs {saved.get(key)!r}"
            for key in sorted(set(given) | set(saved)) if given.get(key) != saved.get(key)]


def write_eval_results(workdir: str, record: dict) -> None:
    write_json(os.path.join(workdir, EVAL_RESULTS), record)


def read_eval_results(workdir: str) -> dict:
    return read_json(os.path.join(workdir, EVAL_RESULTS))


def append_eval_history(workdir: str, records: Iterable[dict]) -> None:
    with open(os.path.join(workdir, EVAL_HISTORY), "a") as f:
        for record in records:
            f.write(json.dumps(json_ready(record)) + "\n")


def read_eval_history(workdir: str) -> List[dict]:
    """Evaluation records, one per (step, split) in step order: a resumed run that evaluated a
    step again keeps its last record. Empty if the run has not evaluated yet.

    An unreadable line (a run killed mid-write) is skipped with a warning naming the file and
    line, so one torn line does not hide all the others.
    """
    records = {}
    for record in _read_jsonl(os.path.join(workdir, EVAL_HISTORY)):
        records[(record["step"], record["split"])] = record
    return [records[key] for key in sorted(records)]


def _read_jsonl(path: str) -> Iterator[dict]:
    """The file's JSON lines (none if it is absent). An unreadable line (a run killed mid-write)
    is skipped with a warning naming the file and line, so one torn line hides nothing else."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                logging.warning("Skipping unreadable line %d of %s (half-written?): %.80r",
                                number, path, line)


def evaluated_steps(workdir: str, split: str) -> set:
    """Steps with an evaluation record of `split` in the workdir's history."""
    return {record["step"] for record in read_eval_history(workdir) if record["split"] == split}


def write_best_checkpoint(workdir: str, metric: str, step: int, value: float) -> None:
    write_json(os.path.join(workdir, BEST_CHECKPOINT),
               {"metric": metric, "step": step, "value": value})


def read_best_checkpoint(workdir: str) -> Optional[Dict[str, Any]]:
    """{metric, step, value}, or None if no evaluated checkpoint has been recorded as best."""
    path = os.path.join(workdir, BEST_CHECKPOINT)
    return read_json(path) if os.path.exists(path) else None


def write_manifest(sweep_dir: str, manifest: dict) -> None:
    os.makedirs(sweep_dir, exist_ok=True)
    write_json(os.path.join(sweep_dir, SWEEP_MANIFEST), manifest)


def read_manifest(sweep_dir: str) -> Optional[dict]:
    path = os.path.join(sweep_dir, SWEEP_MANIFEST)
    return read_json(path) if os.path.exists(path) else None


def write_data_splits(workdir: str, splits: Dict[str, List[str]]) -> None:
    """{split: example ids} of a semi-supervised run: which images had labels, which not."""
    write_json(os.path.join(workdir, DATA_SPLITS),
               {"splits": {name: {"count": len(ids), "ids": ids} for name, ids in splits.items()}})


def read_data_splits(workdir: str) -> Optional[dict]:
    path = os.path.join(workdir, DATA_SPLITS)
    return read_json(path) if os.path.exists(path) else None


def code_revision() -> str:
    """The git commit of this `advseg_jax` ("+dirty" with uncommitted edits to tracked files),
    or "unknown" outside a git checkout (an installed wheel)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def write_revision(workdir: str) -> str:
    """Records the code revision this start runs (a line added when it differs from the last):
    a study that pools runs can then tell which code made each one. Returns it."""
    os.makedirs(workdir, exist_ok=True)
    revision = code_revision()
    if read_revisions(workdir)[-1:] != [revision]:
        with open(os.path.join(workdir, REVISION), "a") as f:
            f.write(revision + "\n")
    return revision


def read_revisions(workdir: str) -> List[str]:
    """The revisions the run started with, in order; empty for a run that predates them."""
    path = os.path.join(workdir, REVISION)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def latest_checkpoint_step(workdir: str) -> Optional[int]:
    """The highest finished checkpoint step on disk (orbax names them by step; a save under
    way has a temporary suffix), or None."""
    path = os.path.join(workdir, CHECKPOINTS)
    steps = [int(name) for name in os.listdir(path) if name.isdigit()] if os.path.isdir(
        path) else []
    return max(steps, default=None)


def append_segment_event(workdir: str, event: dict) -> None:
    """Appends one start or end record (a line, flushed at once: a run killed later keeps it)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, SEGMENTS), "a") as f:
        f.write(json.dumps(json_ready(event)) + "\n")


def read_segments(workdir: str) -> List[dict]:
    """The run's segments, one per start, in order: the start record with the end record's
    keys merged in (no `end` for a segment killed before it could write one, or still running).

    Unreadable lines are skipped with a warning naming the file, as in `read_eval_history`.
    """
    segments: List[dict] = []
    for event in _read_jsonl(os.path.join(workdir, SEGMENTS)):
        if "start" in event:
            segments.append(event)
        elif segments and "end" not in segments[-1]:
            segments[-1].update(event)
    return segments
