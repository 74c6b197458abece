"""Any timm CNN by name: stages from feature_info, preprocessing from pretrained_cfg, weights as timm users keep them.

Nothing downloads: timm's tiny `test_*` models with random weights, and a Hugging Face cache laid out here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import timm
import torch
from safetensors.torch import save_file

from search.cli.results import main as results_main
from search.cli.run import main as run_main
from search.data.decode import decode_image_file
from search.data.feature_cache import FeatureExtractor, TokenLayout
from search.data.pixels import normalize_pixels
from search.errors import UserError
from search.models.backbones import create_backbone
from search.results.bundles import load_bundle
from search.results.onnx_bundle import load_onnx_bundle
from search.results.predict import image_files
from search.results.reading import artifact_store_for
from search.study.checkpoints import CHECKPOINT_ATTR
from search.study.spec import StudySpec
from search.study.trained import load_trial_model
from tests.helpers import PHOTOS, ROOT


@pytest.mark.parametrize(
    ("name", "cuts"),
    [
        ("test_convnext", ("stages0", "stages1", "stages2", "stages3")),
        ("test_efficientnet", ("blocks0", "blocks1", "blocks2", "blocks3", "blocks4", "conv_head")),
        ("test_resnet", ("act1", "layer1", "layer2", "layer3", "layer4")),
        ("test_vit", tuple(f"blocks{i}" for i in range(6))),  # after the patch and position embedding, a block each
    ],
)
def test_a_timm_cnn_is_a_backbone_of_its_feature_levels(name: str, cuts: tuple[str, ...]) -> None:
    backbone = create_backbone(name, pretrained="none")  # its stages were checked to compose to forward_features
    assert backbone.cut_points == cuts and backbone.weights == "random"
    cfg: Any = timm.create_model(name).pretrained_cfg
    assert backbone.mean == tuple(cfg["mean"]) and backbone.std == tuple(cfg["std"])
    assert backbone.native_image_size == cfg["input_size"][-1] == 160
    assert backbone.channels_at(cuts[-1]) == backbone.stage_shapes[-1][1]


def test_a_vits_taps_are_its_mean_patch_token_and_its_class_token() -> None:
    """What a linear probe on a ViT reads; a CNN's taps stay the average and max pools of its maps."""
    backbone = create_backbone("test_vit", pretrained="none")
    assert backbone.prefix_tokens >= 1 and backbone.class_token
    extractor = FeatureExtractor(
        backbone.tap_model(),
        backbone.taps,
        mean=backbone.mean,
        std=backbone.std,
        device=torch.device("cpu"),
        tokens=TokenLayout.of(backbone),
    )
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    pooled = torch.from_numpy(extractor(images, extractor.layers)[extractor.layers[-1]])
    tokens = backbone_tokens(backbone, normalize_pixels(images, backbone.mean, backbone.std))
    assert torch.allclose(pooled[:, 1], tokens[:, 0], atol=1e-5), "the class token"
    assert torch.allclose(pooled[:, 0], tokens[:, backbone.prefix_tokens :].mean(1), atol=1e-5), "the mean patch"
    assert create_backbone("test_convnext", pretrained="none").prefix_tokens == 0


def backbone_tokens(backbone: Any, x: torch.Tensor) -> torch.Tensor:
    """The last stage's tokens [B, T, C], run through the stages by hand."""
    with torch.no_grad():
        for stage in backbone.stages.values():
            x = stage(x)
    return x.squeeze(-1).transpose(1, 2)


def test_a_family_without_an_adapter_is_refused_in_one_line() -> None:
    with pytest.raises(UserError, match="does not run as a sequence of its stages"):
        create_backbone("test_maxvit", pretrained="none")


def test_an_unknown_name_says_where_names_come_from() -> None:
    with pytest.raises(UserError, match=r"unknown backbone 'convnxt_tiny'; choose one of: .*timm\.list_models"):
        create_backbone("convnxt_tiny")


def test_weights_from_a_safetensors_file(tmp_path: Path) -> None:
    trained: Any = timm.create_model("test_convnext")
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    backbone = create_backbone("test_convnext", weights_file=path)
    assert backbone.weights == f"file:{path}"
    expected = trained.stages[3].blocks[0].conv_dw.weight
    stage: Any = backbone.stages["stages3"]
    torch.testing.assert_close(stage[0].blocks[0].conv_dw.weight, expected)


def _hf_cache(root: Path, repo: str, tensors: dict[str, torch.Tensor]) -> None:
    """The Hugging Face hub cache layout: refs/main names a snapshot that holds model.safetensors."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(snapshot / "model.safetensors"))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)


def _offline(cache: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "COLUMNS": "200"}


def test_weights_from_the_hugging_face_cache_offline(tmp_path: Path) -> None:
    source: Any = timm.create_model("test_efficientnet")
    _hf_cache(tmp_path, "timm/test_efficientnet.r160_in1k", source.state_dict())
    torch.save(source.conv_head.weight, tmp_path / "expected.pt")
    script = (
        "import torch; from search.models.backbones import create_backbone; "
        "b = create_backbone('test_efficientnet'); print(b.weights); "
        f"assert torch.equal(b.stages['conv_head'][0].weight, torch.load({str(tmp_path / 'expected.pt')!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=_offline(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "timm:test_efficientnet.r160_in1k"


def test_missing_weights_are_one_line_naming_the_ways_to_give_them(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), "--backbone", "convnext_tiny", "--data", str(PHOTOS)],
        cwd=tmp_path,
        env=_offline(tmp_path / "empty-cache"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--weights FILE" in lines[0] and "Hugging Face cache" in lines[0] and "efficientnet_lite0" in lines[0]
    assert not (tmp_path / "studies").exists(), "nothing was created"


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """run_study.py as a user runs it, offline with an empty Hugging Face cache; it must succeed."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args += (
        "--storage",
        storage,
        "--artifact-dir",
        str(tmp_path / "artifacts"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), *args],
        cwd=tmp_path,
        env=_offline(tmp_path / "empty-cache"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _run_study(tmp_path: Path, space: str, backbone: str, *, trials: int = 2) -> subprocess.CompletedProcess[str]:
    args = ["--space", space, "--backbone", backbone, "--pretrained", "none", "--data", str(PHOTOS)]
    args += ["--trials", str(trials), "--max-epochs", "2", "--patience", "1", "--study-name", "timm"]
    return _run_cli(tmp_path, *args)


def _assert_exports_agree(tmp_path: Path, trial: int, name: str = "timm") -> None:
    """The trial's bundle and ONNX graph, written by `export`, predict what the study's kept model predicts."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    common = ["--study-name", name, "--storage", storage, "--artifact-dir", str(tmp_path / "artifacts")]
    common += ["--trial", str(trial)]
    bundle_dir, onnx_dir = tmp_path / f"bundle-{name}-{trial}", tmp_path / f"onnx-{name}-{trial}"
    assert results_main(["export", *common, "--out", str(bundle_dir)]) == 0
    assert results_main(["export", *common, "--out", str(onnx_dir), "--format", "onnx"]) == 0
    bundle = load_bundle(bundle_dir)
    study = optuna.load_study(study_name=name, storage=storage)
    kept = load_trial_model(study, study.trials[trial], artifact_store_for(study, tmp_path / "artifacts"))
    images = np.stack([decode_image_file(path, bundle.image_size) for path in image_files([PHOTOS])])
    expected = kept.predict_proba(torch.from_numpy(images))
    np.testing.assert_allclose(bundle.predict_proba(torch.from_numpy(images)), expected, atol=1e-5)
    np.testing.assert_allclose(load_onnx_bundle(onnx_dir).predict_pixels(images), expected, atol=1e-3)


def test_a_timm_study_round_trips_through_from_trial_export_onnx_and_predict(tmp_path: Path) -> None:
    """A finetune trial on a timm backbone keeps the bundle `export` writes; a features study taps it
    (--from-trial) and exports too. The backbone-searching test below runs a ViT and features through the same.
    """
    name = "test_convnext"
    done = _run_study(tmp_path, "finetune", name)
    assert f"{name} (random)" in done.stdout and "Best trial" in done.stdout
    study = optuna.load_study(study_name="timm", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    best = study.best_trial.number
    _assert_exports_agree(tmp_path, best)

    tapping = ["--space", "features", "--from-trial", f"timm:{best}", "--backbone", name, "--pretrained", "none"]
    _run_cli(tmp_path, *tapping, "--data", str(PHOTOS), "--trials", "2", "--study-name", "tapped")
    tapped = optuna.load_study(study_name="tapped", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    _assert_exports_agree(tmp_path, tapped.best_trial.number, "tapped")


@pytest.mark.parametrize("space", ["finetune", "features"])
def test_a_study_searches_backbones_and_each_trial_exports_on_its_own(tmp_path: Path, space: str) -> None:
    """`--backbone a,b`: `backbone` is a parameter, the first trials cover each one, each kept model exports."""
    done = _run_study(tmp_path, space, "test_convnext,test_vit", trials=2)
    assert "searching backbones test_convnext, test_vit" in done.stdout
    study = optuna.load_study(study_name="timm", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert sorted(t.params["backbone"] for t in trials) == ["test_convnext", "test_vit"]
    best = study.best_trial
    assert f"Best trial {best.number} (" in done.stdout and f" on {best.params['backbone']})" in done.stdout
    for trial in trials:  # the cut points are each backbone's own parameters: Optuna refuses changing choices
        own = [n for n in trial.params if n.startswith(("cut", "feat_use_", "feat_pool_", "feat_l2_"))]  # per backbone
        assert own and all(n.endswith("@" + trial.params["backbone"]) for n in own), trial.params
        if CHECKPOINT_ATTR in trial.user_attrs:  # a trial among the best so far kept its model
            _assert_exports_agree(tmp_path, trial.number)


def test_the_zoo_searches_the_entries_whose_weights_are_here(tmp_path: Path) -> None:
    """Offline with an empty Hugging Face cache, the zoo keeps the bundled Lite0 and names what it skipped."""
    done = _run_cli(tmp_path, "--space", "features", "--backbone", "zoo", "--data", str(PHOTOS), "--trials", "1")
    output = " ".join((done.stdout + done.stderr).split())
    assert "--backbone zoo: skipping" in output and "efficientnet_b0.ra_in1k" in output
    assert "efficientnet_lite0" in output and "convnext_tiny" not in output  # a GPU entry: not on a CPU


def test_a_scratch_study_searches_no_backbones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for backbone in ("zoo", "test_convnext,test_vit"):
        args = ["--space", "scratch", "--backbone", backbone, "--data", str(PHOTOS)]
        assert run_main([*args, "--storage", f"sqlite:///{tmp_path / 'o.db'}"]) == 2
        assert "scratch studies stand on no backbone" in capsys.readouterr().err
    assert not (tmp_path / "o.db").exists(), "refused before the storage was opened"


def test_several_backbones_refuse_one_weights_file() -> None:
    with pytest.raises(UserError, match="--weights gives one network; it cannot go with several backbones"):
        StudySpec(backbone="test_convnext,test_vit", weights=Path("mine.safetensors"))
    with pytest.raises(UserError, match="several distinct ones"):
        StudySpec(backbone="test_vit,test_vit")
