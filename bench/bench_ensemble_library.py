"""Benchmark: how wide a library an ensemble should be selected from, on an existing study's kept trials.

Selects greedily (search.results.ensemble.select, at most 5 distinct trials) from the best N of the
study's kept trials for several N, and prints each ensemble's validation and test accuracy. The
study must keep more models than the widest N it is asked about to tell anything: a study run
before kept models were released (or with a larger KEPT_MODELS) does.

    python bench/bench_ensemble_library.py --study-name NAME [--storage URL] [--widths 1 3 5 8 10 15]
"""

from __future__ import annotations

import argparse

import numpy as np

from search.results.ensemble import candidates, scored, select
from search.results.reading import DEFAULT_STORAGE, artifact_store_for, load_existing_study
from search.study.evaluation import stored_test_part
from search.study.trained import load_trial_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-name", required=True)
    parser.add_argument("--storage", default=DEFAULT_STORAGE)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 3, 5, 8, 10, 15])
    args = parser.parse_args()
    study = load_existing_study(args.storage, args.study_name)
    store = artifact_store_for(study, None)
    found = candidates(study, store)
    labels = found[0].labels
    images, test_labels = stored_test_part(study)
    test = [load_trial_model(study, c.trial, store).predict_proba(images) for c in found]
    print(f"{args.study_name}: {len(found)} kept trials, {len(test_labels)} test images")
    for width in sorted({min(w, len(found)) for w in args.widths}):
        counts = select([c.probabilities for c in found[:width]], labels, size=5)
        weights = np.array(counts + [0] * (len(found) - width), float) / sum(counts)
        val = sum(w * c.probabilities for w, c in zip(weights, found, strict=True))
        tested = sum(w * p for w, p in zip(weights, test, strict=True))
        accuracy = float((np.asarray(tested).argmax(1) == test_labels.numpy()).mean())
        print(f"  best {width:2d} as the library: val {scored(np.asarray(val), labels)[0]:.1%}, test {accuracy:.1%}")


if __name__ == "__main__":
    main()
