"""The sweep's run_segments.md: each run's command, host and wall time, from its segments.jsonl.

`advseg_jax.main` records every start and end of a run (`workdir_io.read_segments`); a study's
report must list them, including the segments a preemption or a lost machine cut short, which
end with no record. Written beside results.md by `results.py`, only for runs that have them.
"""

import os
from typing import List, Optional

from advseg_jax import workdir_io

RUNS_MD = "run_segments.md"
NO_END = "no end record (killed, or still running)"


def host_text(segment: dict) -> str:
    host = segment.get("host", {})
    cpus = host.get("usable_cpus")
    return (f"{host.get('cpu', 'unknown CPU')}, {cpus} usable CPU{'s' if cpus != 1 else ''}, "
            f"{host.get('devices', '? devices')}")


def _segment_line(segment: dict) -> str:
    ended = (f"{segment['outcome']} after {segment['wall_s']:.0f} s (ended {segment['end']})"
             if "end" in segment else NO_END)
    return (f"- {segment['start']}: {ended}; {host_text(segment)}; "
            f"revision {segment.get('revision', 'unrecorded')}")


def run_section(name: str, segments: List[dict]) -> List[str]:
    ended = [s["wall_s"] for s in segments if "end" in s]
    lines = [f"### {name}", "",
             f"{len(segments)} segment(s); {sum(ended):.0f} s in the {len(ended)} with an end "
             "record.", ""]
    lines += [_segment_line(s) for s in segments]
    commands = list(dict.fromkeys(s.get("command", "") for s in segments))
    lines += ["", "Command:" if len(commands) == 1 else "Commands (in the order first used):", ""]
    lines += [f"    {command}" for command in commands] + [""]
    return lines


def markdown(workdir: str, run_dirs: List[str]) -> Optional[str]:
    """run_segments.md's text for the given `<variant>/seed_<k>` run folders, or None when
    none has a segments.jsonl (runs older than the record)."""
    sections = []
    for run_dir in run_dirs:
        segments = workdir_io.read_segments(run_dir)
        if segments:
            sections += run_section(os.path.relpath(run_dir, workdir), segments)
    if not sections:
        return None
    header = ["# Runs: commands, hosts, wall time", "",
              "From each run's `segments.jsonl` (`advseg_jax.main` writes a line at every start "
              "and end). A run resumed after an interruption has several segments; one with "
              f"\"{NO_END}\" was cut off before it could write its end, so its wall time is "
              "not known here and the total leaves it out.", ""]
    return "\n".join(header + sections)


def write(workdir: str, run_dirs: List[str]) -> Optional[str]:
    """Writes WORKDIR/run_segments.md (see `markdown`); returns its path, or None when there
    is nothing to say."""
    text = markdown(workdir, run_dirs)
    if text is None:
        return None
    path = os.path.join(workdir, RUNS_MD)
    with open(path, "w") as f:
        f.write(text)
    return path
