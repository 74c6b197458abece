"""Benchmark: the ensemble of a default study's best trials against its best single trial, on val and test.

Runs the default features study (60 trials) and the default finetune study (20 trials) on DIR as a
user runs them, then `python -m search ensemble --out ... --format onnx` on each. Prints, per study,
the best trial's and the ensemble's validation and test accuracy (the test split scored once each),
the ensemble's members, and how often the ONNX ensemble's top-1 label agrees with the PyTorch one's
on the test images.

    python bench/bench_ensemble.py --data ../shared/data/flowers-mini [--seed 0] [--spaces features finetune]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from bench_defaults import ROOT, run_arm

from search.results.bundles import load_bundle
from search.results.ensemble import stored_ensemble
from search.results.onnx_bundle import load_onnx_bundle
from search.study.evaluation import stored_test_part

TRIALS = {"features": 60, "finetune": 20}  # the default studies


def onnx_agreement(bundle: Path, onnx_folder: Path, images: np.ndarray) -> float:
    """The share of images on which the ONNX ensemble's top-1 label is the PyTorch ensemble's."""
    import torch

    expected = load_bundle(bundle).predict_proba(torch.from_numpy(images)).argmax(1)
    got = load_onnx_bundle(onnx_folder).predict_pixels(images).argmax(1)
    return float((expected == got).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spaces", nargs="+", default=list(TRIALS), choices=list(TRIALS))
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "studies" / "feature_cache")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for space in args.spaces:
            flags = ["--space", space, "--trials", str(TRIALS[space]), "--seed", str(args.seed)]
            arm = run_arm(space, folder, args.data, args.cache_dir, *flags)
            storage = f"sqlite:///{folder / space}.db"
            outputs = {fmt: folder / f"{space}-ensemble-{fmt}" for fmt in ("bundle", "onnx")}
            started = time.monotonic()
            for fmt, out in outputs.items():
                command = [sys.executable, "-m", "search", "ensemble", "--study-name", space, "--storage", storage]
                command += ["--out", str(out), "--format", fmt]
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                if done.returncode != 0:
                    raise SystemExit(f"ensemble of {space} failed:\n{done.stderr[-2000:]}")
                last = done.stdout.strip().splitlines()[-1]
            seconds = time.monotonic() - started
            study = optuna.load_study(study_name=space, storage=storage)
            summary = stored_ensemble(study)
            assert summary is not None
            images, _ = stored_test_part(study)
            agreement = onnx_agreement(outputs["bundle"], outputs["onnx"], images.numpy())
            rows.append((space, arm.seconds, seconds, summary, last, agreement))
    print(f"{Path(args.data).name}, seed {args.seed}:")
    for space, study_seconds, seconds, summary, last, agreement in rows:
        members = ", ".join(f"#{t} x{w:.2f}" for t, w in zip(summary.trials, summary.weights, strict=True))
        print(f"  {space:8} study {study_seconds:4.0f}s, ensemble (bundle + onnx) {seconds:4.0f}s: {last}")
        print(f"  {'':8} members {members}; ONNX top-1 agrees with PyTorch on {agreement:.1%} of test images")


if __name__ == "__main__":
    main()
