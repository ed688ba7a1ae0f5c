"""Times a training step of this tree against a git revision, alternating them in one run.

    python bench/side_by_side.py --rev=d09a87b --config=configs/stanford_background.py \\
        --variant=adversarial --repeats=3 --set batch_size=16

On a shared host absolute step times drift by 2-3x within minutes; a ratio of two steps timed
one after the other, again and again, does not. Each tree runs in a worker process of its own
(bench/_step_worker.py with that tree first on PYTHONPATH), both stay compiled in memory, and
the steps alternate: current, revision, current, revision, ... The revision is unpacked with
`git archive` into a temporary directory, so the checkout is left alone. Prints, per tree,
FLOPs, min and median step time, the 1-minute load average at each step, the SHA-256 of the
step's StableHLO without locations, and speed-up = revision min / current min.
`same_program` says whether the two digests are equal: then the trees' steps are one program and
a ratio away from 1 is the host's noise. `--digest_only` lowers both steps and compares their
digests without compiling or timing them (seconds instead of minutes for the VOC step).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import List

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)


def export_revision(rev: str, directory: str) -> None:
    """The revision's tracked files under `directory` (git archive | tar -x)."""
    archive = subprocess.run(["git", "-C", _ROOT, "archive", "--format=tar", rev],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--rev={rev!r}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", directory], input=archive.stdout, check=True)


class _Worker:
    """A step of one tree, compiled once, timed on request."""

    def __init__(self, name: str, tree: str, args: argparse.Namespace):
        self.name, self.times, self.loads = name, [], []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (tree, os.environ.get("PYTHONPATH")) if p),
            STEP_WORKER_DIGEST_ONLY="1" if args.digest_only else "0")
        command = [sys.executable, os.path.join(_HERE, "_step_worker.py"),
                   os.path.join(tree, args.config), args.variant, *args.set]
        self.process = subprocess.Popen(command, cwd=tree, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit(f"{name} ({tree}): the step worker failed to start; see stderr.")
        self.flops, self.compile_s = float(line[1]), float(line[2])
        self.digest = line[3] if len(line) > 3 else None

    def step(self) -> float:
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        seconds = float(self.process.stdout.readline())
        self.times.append(seconds)
        self.loads.append(os.getloadavg()[0])
        return seconds

    def close(self) -> None:
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        self.process.wait()

    def summary(self) -> dict:
        return {"flops_per_step": self.flops, "compile_time_s": self.compile_s,
                "stablehlo_sha256": self.digest,
                "step_times_s": self.times, "min_step_time_s": min(self.times),
                "median_step_time_s": statistics.median(self.times),
                "load_average_1m": self.loads}


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as directory:
        export_revision(args.rev, directory)
        # The revision first: if the current tree's worker fails, nothing else is wasted.
        workers = [_Worker(f"rev {args.rev}", directory, args), _Worker("current", _ROOT, args)]
        if args.digest_only:
            digests = {"current": workers[1].digest, "revision_step": workers[0].digest}
            for worker in workers:
                worker.process.wait()
            return {"config": args.config, "variant": args.variant, "overrides": args.set,
                    "revision": args.rev, "stablehlo_sha256": digests,
                    "same_program": digests["current"] == digests["revision_step"]}
        try:
            for _ in range(args.repeats):
                for worker in reversed(workers):
                    seconds = worker.step()
                    print(f"{worker.name:>14s}: {seconds:8.3f} s  (load {os.getloadavg()[0]:.2f})",
                          file=sys.stderr, flush=True)
        finally:
            for worker in workers:
                worker.close()
    old, new = (w.summary() for w in workers)
    return {"config": args.config, "variant": args.variant, "overrides": args.set,
            "revision": args.rev, "repeats": args.repeats, "current": new, "revision_step": old,
            "speedup_min": old["min_step_time_s"] / new["min_step_time_s"],
            "speedup_median": old["median_step_time_s"] / new["median_step_time_s"],
            "same_program": old["stablehlo_sha256"] == new["stablehlo_sha256"],
            "host_cpu_count": os.cpu_count()}


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", required=True, help="git revision to compare with, e.g. d09a87b")
    parser.add_argument("--config", required=True, help="config file, relative to the repo root")
    parser.add_argument("--variant", choices=("baseline", "adversarial"), default="adversarial",
                        help="baseline: lambda_adv=0; adversarial: the config's (0.5 if 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per tree (>= 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, VALUE a Python literal, e.g. batch_size=4 or "
                             "input.crop_size=(321,321); keys a tree lacks are skipped there")
    parser.add_argument("--digest_only", action="store_true",
                        help="compare the two steps' programs (StableHLO digests) without "
                             "compiling or timing them")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error(f"--repeats={args.repeats}: use at least 2 (a min of one is no min).")
    results = run(args)
    print(json.dumps(results, indent=1))
    if args.digest_only:
        print(f"{args.config} {args.variant} {' '.join(args.set)}: same program as {args.rev}: "
              f"{results['same_program']}")
        return
    print(f"{args.config} {args.variant} {' '.join(args.set)}: current "
          f"{results['current']['min_step_time_s']:.3f} s, {args.rev} "
          f"{results['revision_step']['min_step_time_s']:.3f} s (min of {args.repeats}); "
          f"speed-up x{results['speedup_min']:.2f} (medians: x{results['speedup_median']:.2f}); "
          f"same program: {results['same_program']}")


if __name__ == "__main__":
    main(sys.argv[1:])
