"""Benchmark: a warm-started study reaches the source study's best validation accuracy in fewer trials.

Runs three default features studies in one storage (the feature cache is shared, so only the first
extracts): the source on SOURCE (default: DIR, seed 0), then on DIR a cold study and a study with
`--warm-start source`, both with seed 1. Prints, for the cold and the warm study, the first trial
at which their best validation accuracy reached the source's best and the cold study's final best.
The seed also draws which training images a set without a `test/` folder holds out, so the same
configuration may score differently in the source and in the others.

    python bench/bench_warm_start.py --data ../shared/data/flowers-mini [--source-data DIR] [--trials 40]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna
from bench_defaults import run_arm

from search.study.trial_facts import TrialFacts


def trials_to_reach(storage: str, name: str, target: float) -> int | None:
    """How many finished trials the study had run when its best complete trial's val accuracy first reached `target`."""
    study = optuna.load_study(study_name=name, storage=storage)
    for count, trial in enumerate(sorted(study.trials, key=lambda t: t.number), start=1):
        accuracy = TrialFacts.of(trial).val_accuracy
        if trial.state == optuna.trial.TrialState.COMPLETE and accuracy is not None and accuracy >= target:
            return count
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--source-data", default=None, help="the source study's data (default: --data)")
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    flags = ["--space", "features", "--trials", str(args.trials)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        storage = f"sqlite:///{folder / 'studies.db'}"
        cache = folder / "cache"
        source = run_arm("source", folder, args.source_data or args.data, cache, *flags, storage=storage)
        cold = run_arm("cold", folder, args.data, cache, *flags, "--seed", "1", storage=storage)
        warm = run_arm(
            "warm", folder, args.data, cache, *flags, "--seed", "1", "--warm-start", "source", storage=storage
        )
        targets = {"the source's best": source.val, "the cold study's best": cold.val}
        reached = {
            (goal, arm.name): trials_to_reach(storage, arm.name, value)
            for goal, value in targets.items()
            for arm in (cold, warm)
        }
    print(f"features studies, {args.trials} trials each; source on {Path(args.source_data or args.data).name}:")
    for arm in (source, cold, warm):
        print(f"  {arm.name:7} {arm.seconds:5.0f}s  val {arm.val:6.1%}  test {arm.test:6.1%}  {arm.winner}")
    for goal, value in targets.items():
        cold_n, warm_n = reached[(goal, "cold")], reached[(goal, "warm")]
        line = f"  trials to {goal} ({value:.1%}): warm {warm_n or 'never'}, cold {cold_n or 'never'}"
        print(line + (f" (warm / cold {warm_n / cold_n:.2f})" if cold_n and warm_n else ""))


if __name__ == "__main__":
    main()
