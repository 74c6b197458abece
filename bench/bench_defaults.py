"""Benchmark: what a new user gets by default, three ways, on one data set and one split.

Runs `run_study.py` as a user would, each in its own fresh storage under a temporary folder:
  1. the probe alone: a linear head on the frozen network's native-size features (`--trials 1`, the
     finetune space's first trial);
  2. the default finetune study (`--trials N`, or `--time-budget S`);
  3. the default features study (`--space features --trials M`).
Each arm's wall time (the whole command), best val accuracy and its test accuracy are printed, then
how the finetune study compares with the other two. All three share the decoded-image cache, so
decoding is paid by the first arm only.

    python bench/bench_defaults.py --data ../shared/data/flowers-mini [--trials 20] [--features-trials 60]
    python bench/bench_defaults.py --data DIR --time-budget 300
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Arm:
    name: str
    seconds: float
    val: float
    test: float
    trials: int
    winner: str


def run_arm(name: str, folder: Path, data: str, cache: Path, *flags: str, storage: str | None = None) -> Arm:
    """One run_study.py command as a user runs it, in its own storage unless given one (studies that name each other)."""
    storage = storage or f"sqlite:///{folder / name}.db"
    command = [sys.executable, str(ROOT / "run_study.py"), "--data", data, "--storage", storage, "--study-name", name]
    command += ["--artifact-dir", str(folder / f"{name}-artifacts"), "--cache-dir", str(cache), *flags]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    study = optuna.load_study(study_name=name, storage=storage)
    best = study.best_trial
    test = study.user_attrs.get("test_evaluation", {})
    winner = next((line for line in done.stdout.splitlines() if line.startswith("Best trial ")), "")
    finished = [t for t in study.trials if t.state.is_finished()]
    return Arm(
        name, seconds, best.user_attrs["val_accuracy"], test.get("accuracy", float("nan")), len(finished), winner
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of class folders (or train/ val/ [test/])")
    parser.add_argument("--trials", type=int, default=20, help="the finetune study's trials")
    parser.add_argument("--time-budget", type=float, default=None, help="the finetune study's --time-budget instead")
    parser.add_argument("--features-trials", type=int, default=60)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "studies" / "feature_cache")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    finetune = ["--time-budget", str(args.time_budget)] if args.time_budget else ["--trials", str(args.trials)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        arms = [
            run_arm("probe", folder, args.data, args.cache_dir, "--trials", "1"),
            run_arm("finetune", folder, args.data, args.cache_dir, *finetune),
            run_arm(
                "features",
                folder,
                args.data,
                args.cache_dir,
                "--space",
                "features",
                "--trials",
                str(args.features_trials),
            ),
        ]
    print(f"defaults on {Path(args.data).name}:")
    print(f"  {'arm':10} {'wall':>8} {'trials':>6} {'val':>7} {'test':>7}  best")
    for arm in arms:
        print(f"  {arm.name:10} {arm.seconds:7.0f}s {arm.trials:6d} {arm.val:7.1%} {arm.test:7.1%}  {arm.winner}")
    probe, tuned, features = arms
    print(
        f"  finetune - probe   : {100 * (tuned.val - probe.val):+.1f} points val, {100 * (tuned.test - probe.test):+.1f} test"
    )
    print(
        f"  finetune - features: {100 * (tuned.val - features.val):+.1f} points val, "
        f"{100 * (tuned.test - features.test):+.1f} test; wall ratio {tuned.seconds / features.seconds:.1f}x"
    )


if __name__ == "__main__":
    main()
