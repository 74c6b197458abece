"""Benchmark: the same finetune study pruned by the default (median), by Hyperband, and not at all.

The trials are the same in every arm: a random sampler with one seed proposes configs that do not
depend on earlier results, after the space's known-good first trial (as in every study). Each arm is
a real study (runner.prepare + runner.run) on its own SQLite database; decoded images are shared.
Prints, per pruner, the epochs trained, trials pruned, wall time and the best trial's val accuracy,
then the default's share of the unpruned epochs and its distance to the unpruned best, against the
targets (at most a third of the epochs, within one point).

    python bench/bench_pruning.py [--data digits|DIR] [--trials 20] [--image-size N] [--max-epochs 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.study import runner
from search.study.spec import StudySpec

ARMS = ("median", "hyperband", "none")  # the first is the default (StudySpec.pruner)


@dataclass(frozen=True)
class Arm:
    pruner: str
    seconds: float
    epochs: int
    pruned: int
    best_accuracy: float


def run_arm(pruner: str, args: argparse.Namespace, folder: Path) -> Arm:
    spec = StudySpec(
        space="finetune",
        trials=args.trials,
        data=args.data,
        image_size=args.image_size,
        max_epochs=args.max_epochs,
        sampler="random",
        pruner=pruner,
        storage=f"sqlite:///{folder / f'{pruner}.db'}",
        artifact_dir=folder / "artifacts",
        cache_dir=folder / "cache",
        study_name=f"pruning-{pruner}",
        device="cpu",
    )
    started = time.perf_counter()
    runner.run(runner.prepare(spec))
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    return Arm(
        pruner=pruner,
        seconds=seconds,
        epochs=sum(int(t.user_attrs.get("epochs_run", 0)) for t in study.trials),
        pruned=sum(t.state is TrialState.PRUNED for t in study.trials),
        best_accuracy=float(study.best_trial.user_attrs["val_accuracy"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="digits, or a folder with one sub-folder per class")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=None, help="default: what the study would pick")
    parser.add_argument("--max-epochs", type=int, default=StudySpec.max_epochs)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{args.trials} finetune trials on {Path(args.data).name}, at most {args.max_epochs} epochs each, CPU")
    arms = {}
    with tempfile.TemporaryDirectory() as folder:
        for pruner in ARMS:
            arm = arms[pruner] = run_arm(pruner, args, Path(folder))
            print(
                f"  {pruner:<10} {arm.epochs:4d} epochs  {arm.pruned:3d} pruned  {arm.seconds:7.1f} s  "
                f"best val accuracy {arm.best_accuracy:.2%}"
            )
    default, unpruned = arms[ARMS[0]], arms["none"]
    share = default.epochs / unpruned.epochs
    gap = (unpruned.best_accuracy - default.best_accuracy) * 100
    print(f"{ARMS[0]} / none epochs: {share:.2f} (target at most 0.33)")
    print(f"none - {ARMS[0]} best val accuracy: {gap:+.1f} points (target at most +1.0)")


if __name__ == "__main__":
    main()
