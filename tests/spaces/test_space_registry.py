"""Search spaces by name or from a user's .py file; bad names, files and registrations are loud."""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest

from search.errors import UserError
from search.kinds import get_kind, kind_names, kind_of_config
from search.training.configs import FeaturesConfig, FinetuneConfig, SpaceContext
from spaces import _registry, get_space, list_spaces, register_space
from spaces.features import first_trials

CTX = SpaceContext(
    backbone="efficientnet_lite0",
    cut_points=("block4", "conv_head"),
    max_unfreeze={"block4": 2, "conv_head": 3},
    num_classes=10,
    train_size=500,
    device="cpu",
    feature_layers=("block4", "block6"),
)
VALID_FEATURES_FILE = '''"""A linear probe on the deepest layer.

Nothing is searched but the classifier's strength.
"""
from search.training.configs import FeaturesConfig

KIND = "features"


def suggest(trial, ctx):
    c = trial.suggest_float("logreg_c", 1e-2, 1e2, log=True)
    return FeaturesConfig(
        layers=(ctx.feature_layers[-1],), pooling=("avg",), l2_normalize=(True,), pca_dims=0, classifier="logreg",
        logreg_c=c,
    )
'''


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spaces registered here stay here: the registry is a copy for the test's duration."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write(tmp_path: Path, text: str, name: str = "my_space.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_bundled_spaces_are_registered_with_their_kinds() -> None:
    assert {"finetune", "features"} <= set(list_spaces())
    assert list_spaces() == sorted(list_spaces())
    assert get_space("finetune").kind == "finetune"
    features = get_space("features")
    assert features.kind == "features" and features.first_trials is first_trials
    assert features.summary and "\n" not in features.summary, "the first docstring line"
    assert features.main_choices[:2] == ("backbone", "classifier"), "what its report compares first"


def test_an_unknown_name_lists_the_spaces() -> None:
    with pytest.raises(UserError, match="unknown space 'finetuen'") as error:
        get_space("finetuen")
    message = str(error.value)
    assert "choose one of: " + ", ".join(list_spaces()) in message
    assert ".py file" in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        get_space(str(tmp_path / "nowhere.py"))


def test_a_file_without_suggest_says_what_to_define(tmp_path: Path) -> None:
    path = write(tmp_path, "suggest = 3  # not a function\n")
    with pytest.raises(UserError, match=r"must define suggest\(trial, ctx\)") as error:
        get_space(str(path))
    assert str(path) in str(error.value)


def test_a_file_that_fails_to_import_gives_the_cause_not_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "import math\nraise RuntimeError('half-written space')\n")
    with pytest.raises(UserError, match="failed to import: RuntimeError: half-written space") as error:
        get_space(str(path))
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_a_file_with_a_syntax_error_is_a_user_error(tmp_path: Path) -> None:
    path = write(tmp_path, "def suggest(trial, ctx)\n    pass\n")
    with pytest.raises(UserError, match="failed to import: SyntaxError"):
        get_space(str(path))


def test_a_file_with_an_unknown_kind_lists_the_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, "KIND = 'sklearn'\n\ndef suggest(trial, ctx):\n    return None\n")
    with pytest.raises(UserError, match="KIND must be one of") as error:
        get_space(str(path))
    assert all(name in str(error.value) for name in kind_names())
    assert "'sklearn'" in str(error.value)


def test_a_valid_features_file_is_a_features_space(tmp_path: Path) -> None:
    path = write(tmp_path, VALID_FEATURES_FILE, "probe.py")
    space = get_space(str(path))
    assert space.name == str(path)
    assert space.kind == "features"
    assert space.summary.startswith("A linear probe on the deepest layer.")
    assert space.first_trials is None
    config = space.suggest(optuna.trial.FixedTrial({"logreg_c": 0.5}), CTX)
    assert config == FeaturesConfig(
        layers=("block6",), pooling=("avg",), l2_normalize=(True,), pca_dims=0, classifier="logreg", logreg_c=0.5
    )
    assert kind_of_config(config) is get_kind(space.kind)
    assert space.name not in list_spaces(), "a file is used, not registered"


def test_a_file_without_kind_is_a_finetune_space(tmp_path: Path) -> None:
    path = write(tmp_path, VALID_FEATURES_FILE.replace('KIND = "features"\n', ""), "no_kind.py")
    assert get_space(str(path)).kind == "finetune"


def test_a_file_names_its_main_choices_in_its_own_words(tmp_path: Path) -> None:
    assert get_space(str(write(tmp_path, VALID_FEATURES_FILE, "probe.py"))).main_choices == ()
    named = VALID_FEATURES_FILE.replace('KIND = "features"\n', 'KIND = "features"\nMAIN_CHOICES = ["logreg_c"]\n')
    assert get_space(str(write(tmp_path, named, "named.py"))).main_choices == ("logreg_c",)


def probe_config(ctx: SpaceContext) -> FeaturesConfig:
    return FeaturesConfig(
        layers=(ctx.feature_layers[-1],), pooling=("avg",), l2_normalize=(True,), pca_dims=0, classifier="logreg"
    )


def test_register_space_adds_a_named_space_with_its_summary() -> None:
    name = unique("test-registry")

    def suggest(trial: optuna.trial.BaseTrial, ctx: SpaceContext) -> FeaturesConfig:
        """First line.

        More detail.
        """
        return probe_config(ctx)

    assert register_space(name, kind="features", first_trials=first_trials)(suggest) is suggest
    space = get_space(name)
    assert (space.name, space.kind, space.summary, space.suggest) == (name, "features", "First line.", suggest)
    assert space.first_trials is first_trials
    assert name in list_spaces()


def test_register_space_refuses_a_name_twice() -> None:
    name = unique("test-registry-twice")

    def first(trial: optuna.trial.BaseTrial, ctx: SpaceContext) -> FinetuneConfig:
        raise NotImplementedError

    def second(trial: optuna.trial.BaseTrial, ctx: SpaceContext) -> FinetuneConfig:
        raise NotImplementedError

    register_space(name)(first)
    with pytest.raises(ValueError, match=f"'{name}' is already registered"):
        register_space(name)(second)
    assert get_space(name).suggest is first, "the first registration stays"
    with pytest.raises(ValueError, match="already registered"):
        register_space("finetune", kind="finetune")(second)


def test_register_space_refuses_an_unknown_kind() -> None:
    name = unique("test-registry-kind")
    with pytest.raises(ValueError, match=r"space kind must be one of .*not 'sklearn'"):
        register_space(name, kind="sklearn")
    assert name not in list_spaces()
