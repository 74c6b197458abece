"""Benchmark: a deployment constraint keeps the search going and returns a feasible best trial.

Runs the default features study on DIR twice, each in a fresh storage (the caches are shared, so the
second pays no extraction): unconstrained, then with `--max-latency-ms` at half the unconstrained best
trial's latency. Prints both bests (val, test, latency at batch 1, size) and whether the constrained
best meets its limit.

    python bench/bench_constraints.py --data ../shared/data/flowers-mini [--trials 60]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna
from bench_defaults import run_arm

from search.study.record import best_completed, completed_trials
from search.study.trial_facts import TrialFacts, feasible


def best_costs(folder: Path, name: str) -> tuple[TrialFacts, int, int]:
    """The arm's best trial's facts, and how many of its complete trials were feasible, of how many."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / name}.db")
    best = best_completed(study)
    if best is None:
        raise SystemExit(f"{name}: no feasible best trial")
    done = completed_trials(study)
    return TrialFacts.of(best), sum(feasible(t) for t in done), len(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--trials", type=int, default=60)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    flags = ["--space", "features", "--trials", str(args.trials)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        free = run_arm("unconstrained", folder, args.data, folder / "cache", *flags)
        free_best, _, _ = best_costs(folder, "unconstrained")
        assert free_best.latency_ms_b1 is not None, "the unconstrained best trial was timed"
        limit = free_best.latency_ms_b1 / 2
        bound = run_arm("constrained", folder, args.data, folder / "cache", *flags, "--max-latency-ms", f"{limit:.3f}")
        bound_best, fits, done = best_costs(folder, "constrained")
    print(f"features studies on {Path(args.data).name}, {args.trials} trials each:")
    for arm, facts in ((free, free_best), (bound, bound_best)):
        print(
            f"  {arm.name:13} {arm.seconds:5.0f}s  val {arm.val:6.1%}  test {arm.test:6.1%}  "
            f"{facts.latency_ms_b1:.1f} ms/image  {(facts.size_bytes or 0) / 1e6:.1f} MB  {arm.winner}"
        )
    latency = bound_best.latency_ms_b1 or float("inf")
    print(
        f"  --max-latency-ms {limit:.1f}: {fits} of {done} complete trials feasible; best {latency:.1f} ms "
        f"({'meets' if latency <= limit else 'MISSES'} the limit)"
    )


if __name__ == "__main__":
    main()
