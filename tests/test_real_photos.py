"""Studies on real photos, which separate far less easily than digits: defaults must hold up here."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from search.study.runner import prepare, run
from tests.results_study import flowers_features_spec


def test_a_features_study_on_real_photos_beats_chance_by_far(tmp_path_factory: pytest.TempPathFactory) -> None:
    prepared = prepare(
        flowers_features_spec(tmp_path_factory)
    )  # shared with test_onnx: built once a session  # default image size: the backbone's native 224 px, though the photos are 144 px
    assert prepared.resolved.image_size == 224
    assert (prepared.resolved.mean, prepared.resolved.std) == ((0.5,) * 3, (0.5,) * 3)
    run(prepared)
    study = prepared.study
    first = study.trials[0]  # the enqueued standard recipe: a logistic regression on the deepest layer
    assert first.state == TrialState.COMPLETE and first.params["classifier"] == "logreg"
    accuracies = [t.user_attrs["val_accuracy"] for t in study.trials if t.state == TrialState.COMPLETE]
    # 20 val photos of 5 kinds (chance 0.2), learnt from 4-5 photos a kind: 0.55-0.6 measured
    assert max(accuracies) >= 0.5, accuracies
    assert study.best_trial.user_attrs["val_accuracy"] >= 0.4, accuracies  # the best by validation loss
