"""--warm-start: an earlier study's best configurations run first; what does not apply is left to the sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from search.cli.run import main
from search.study.record import completed_trials
from search.study.spec import StudySpec
from search.study.warm_start import FROM_EACH_SOURCE, replayed
from search.training.configs import BACKBONE_PARAM, SpaceContext
from spaces import get_space
from tests.results_study import STUDY_FLAGS

LITE0_LAYERS = ("block2", "block5", "conv_head")


def context(backbone: str, layers: tuple[str, ...], searched: tuple[str, ...] = ()) -> SpaceContext:
    return SpaceContext(
        backbone=backbone,
        cut_points=layers,
        max_unfreeze=dict.fromkeys(layers, 1),
        num_classes=3,
        train_size=100,
        device="cpu",
        feature_layers=layers,
        searched=searched,
    )


def test_a_replay_keeps_what_applies_and_drops_the_rest() -> None:
    space = get_space("features")
    source: dict[str, Any] = {"feat_use_block2": True, "feat_use_block5": False, "feat_use_conv_head": True}
    source |= {"feat_pool_block2": "max", "feat_pool_conv_head": "both", "feat_l2_block2": True}
    source |= {"feat_l2_conv_head": False, "feat_pca": False, "classifier": "logreg", "logreg_c": 3.0}
    same = replayed(
        source, "efficientnet_lite0", space, {"efficientnet_lite0": context("efficientnet_lite0", LITE0_LAYERS)}
    )
    assert same == source, "on the same backbone every parameter applies"

    other_layers = ("stages.0", "stages.1")
    other = replayed(source, "efficientnet_lite0", space, {"test_convnext": context("test_convnext", other_layers)})
    assert not any(name.startswith("feat_use") for name in other), "another backbone's layers do not apply"
    assert other["classifier"] == "logreg" and other["logreg_c"] == 3.0, "the classifier does"

    searched = ("efficientnet_lite0", "test_convnext")
    contexts = {
        "efficientnet_lite0": context("efficientnet_lite0", LITE0_LAYERS, searched),
        "test_convnext": context("test_convnext", other_layers, searched),
    }
    onto_several = replayed(source, "efficientnet_lite0", space, contexts)
    assert onto_several[BACKBONE_PARAM] == "efficientnet_lite0"
    assert onto_several["feat_use_block2@efficientnet_lite0"] is True, "a backbone's own names carry its suffix"
    back = replayed(onto_several, None, space, {"efficientnet_lite0": context("efficientnet_lite0", LITE0_LAYERS)})
    assert back == source, "and lose it onto a study of that backbone alone"

    assert "logreg_c" not in replayed(source | {"logreg_c": 1e9}, None, space, {"x": context("x", LITE0_LAYERS)})


def test_a_warm_started_study_runs_its_sources_best_configurations_first(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    common = ["--space", "features", *STUDY_FLAGS, "--storage", storage]
    common += ["--artifact-dir", str(tmp_path / "artifacts"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*common, "--trials", "6", "--study-name", "first"]) == 0
    source = optuna.load_study(study_name="first", storage=storage)
    best = [t.params for t in completed_trials(source)[:FROM_EACH_SOURCE]]

    assert main([*common, "--trials", "5", "--seed", "1", "--study-name", "second", "--warm-start", "first"]) == 0
    second = optuna.load_study(study_name="second", storage=storage)
    first_trials = len(get_space("features").first_trials(context("x", LITE0_LAYERS)))  # type: ignore[misc]
    warm = [t.params for t in second.trials[first_trials : first_trials + len(best)]]
    assert [params for params in best if params not in warm] == [], "each of the source's best ran, unchanged"
    assert StudySpec.from_record(second.user_attrs["spec"]).warm_start == ("first",)


def test_a_warm_start_from_nothing_usable_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    common = [*STUDY_FLAGS, "--trials", "1", "--storage", storage, "--cache-dir", str(tmp_path / "cache")]
    common += ["--artifact-dir", str(tmp_path / "artifacts")]
    assert main([*common, "--space", "features", "--study-name", "few"]) == 0
    capsys.readouterr()
    assert main([*common, "--space", "features", "--warm-start", "nowhere"]) == 2
    assert "--warm-start nowhere: no study of that name" in capsys.readouterr().err
    assert main([*common, "--space", "finetune", "--warm-start", "few"]) == 2
    assert "--warm-start few is a --space features study" in capsys.readouterr().err
