"""The scratch space and kind: conditional parameters, the network a config builds, and a real study on digits."""

from __future__ import annotations

import csv
import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from search.cli.results import main as results_main
from search.cli.run import main as run_main
from search.data.dataset import SPLIT_CODES, decode_source
from search.data.sources import VAL, open_source
from search.kinds.finetune.kind import finetuned_parts, network_of
from search.kinds.finetune.trainer import trained_span
from search.models.heads import FLATTEN_GRID
from search.models.scratch import scratch_backbone
from search.results.bundles import load_bundle
from search.study.artifacts import PER_CLASS_FILE, fetch_artifact, open_artifact_store, read_per_class
from search.study.record import read_record, trial_artifacts
from search.study.trained import load_trial_model
from search.training.configs import ScratchConfig, SpaceContext
from spaces import get_space
from spaces._optimizers import SGD_MOMENTUM
from spaces.scratch import FIRST_CHANNELS, MAX_CHANNELS, users_cnn
from tests.results_study import FinishedStudy

CPU_CTX = SpaceContext(
    backbone="scratch",
    cut_points=("block1", "block2", "block3"),
    max_unfreeze={"block1": 1, "block2": 2, "block3": 3},
    num_classes=10,
    train_size=1259,
    device="cpu",
    image_size=32,
)
CUDA_CTX = dataclasses.replace(CPU_CTX, device="cuda")
COMMON: dict[str, Any] = {"dropout": 0.3, "weight_decay": 1e-4, "batch_size": 64, "augment": "none"}
WIDEST: dict[str, Any] = COMMON | {  # the most maps the space can ask for
    "blocks": 4,
    "convs_per_block": 2,
    "kernel_size": 3,
    "channels_first": 64,
    "channels_growth": "double",
    "batchnorm": True,
    "pool": "max",
    "head_pool": "flatten",
    "fc_layers": 2,
    "fc_width": 256,
    "optimizer": "sgd",
    "lr@sgd": 0.05,
}
# (params, context, the channels per block they must give)
CASES: list[tuple[dict[str, Any], SpaceContext, tuple[int, ...]]] = [
    (  # the widest a CPU allows: doubling stops at its 128-map cap
        WIDEST,
        CPU_CTX,
        (64, 128, 128, 128),
    ),
    (  # the same on a GPU doubles up to 256
        WIDEST,
        CUDA_CTX,
        (64, 128, 256, 256),
    ),
    (  # no hidden layer: no fc_width; adam: no lr@sgd
        COMMON
        | {
            "blocks": 2,
            "convs_per_block": 1,
            "kernel_size": 5,
            "channels_first": 24,
            "channels_growth": "constant",
            "batchnorm": False,
            "pool": "avg",
            "head_pool": "avg",
            "fc_layers": 0,
            "optimizer": "adam",
            "lr@adam": 1e-3,
        },
        CPU_CTX,
        (24, 24),
    ),
    (
        COMMON
        | {
            "blocks": 1,
            "convs_per_block": 2,
            "kernel_size": 5,
            "channels_first": 200,
            "channels_growth": "double",
            "batchnorm": False,
            "pool": "max",
            "head_pool": "flatten",
            "fc_layers": 1,
            "fc_width": 100,
            "optimizer": "adamw",
            "lr@adam": 3e-4,
        },
        CUDA_CTX,
        (200,),
    ),
]


def suggested(params: dict[str, Any], ctx: SpaceContext) -> tuple[ScratchConfig, optuna.trial.FixedTrial]:
    """The space's config for exactly these parameters; a value outside its range is an error, not a warning."""
    trial = optuna.trial.FixedTrial(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = get_space("scratch").suggest(trial, ctx)
    assert isinstance(config, ScratchConfig)
    return config, trial


def layers(module: nn.Module, kind: type[nn.Module]) -> list[Any]:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize(("params", "ctx", "channels"), CASES)
def test_fixed_trial_config_and_the_network_it_builds(
    params: dict[str, Any], ctx: SpaceContext, channels: tuple[int, ...]
) -> None:
    config, trial = suggested(params, ctx)
    assert set(trial.params) == set(params), "each parameter given is one the space asked for, and no other"
    assert config.channels == channels and config.blocks == params["blocks"]
    assert config.convs_per_block == params["convs_per_block"] and config.kernel_size == params["kernel_size"]
    assert (config.batchnorm, config.pool, config.head_pool) == (
        params["batchnorm"],
        params["pool"],
        params["head_pool"],
    )
    assert config.fc_layers == params["fc_layers"] and config.optimizer == params["optimizer"]
    if params["fc_layers"]:
        assert config.fc_width == params["fc_width"]
    sgd = params["optimizer"] == "sgd"
    assert config.lr == params["lr@sgd" if sgd else "lr@adam"]
    assert config.momentum == (SGD_MOMENTUM if sgd else 0.0)

    backbone = scratch_backbone(config.architecture)
    names = tuple(f"block{i}" for i in range(1, len(channels) + 1))
    assert backbone.stage_names == names and backbone.cut_points == names  # every block is a cut point
    assert backbone.mean == backbone.std == (0.5, 0.5, 0.5)
    pool = nn.MaxPool2d if config.pool == "max" else nn.AvgPool2d
    in_channels = 3
    for name, width in zip(names, channels, strict=True):
        block = backbone.stages[name]
        convs = layers(block, nn.Conv2d)
        assert len(convs) == config.convs_per_block
        assert [(c.in_channels, c.out_channels) for c in convs] == [(in_channels, width)] + [(width, width)] * (
            len(convs) - 1
        )
        assert all(c.kernel_size == (config.kernel_size,) * 2 for c in convs)
        assert all(c.padding == (config.kernel_size // 2,) * 2 for c in convs)  # "same" convs: only the pool shrinks
        assert len(layers(block, nn.BatchNorm2d)) == (config.convs_per_block if config.batchnorm else 0)
        assert all((c.bias is None) == config.batchnorm for c in convs)  # batch norm's shift replaces the bias
        unit = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] if config.batchnorm else [nn.Conv2d, nn.ReLU]
        assert [type(m) for m in block.children()] == unit * config.convs_per_block + [pool]  # then one 2x2 pool
        in_channels = width
    sides = [shape[-1] for shape in backbone.stage_shapes]  # of a 64 px image
    assert sides == [64 // 2**i for i in range(1, len(channels) + 1)]
    assert backbone.channels_at(names[-1]) == channels[-1]

    finetune = config.as_finetune()
    assert finetune.cut == names[-1] and trained_span(backbone, finetune) == (0, len(names))  # all blocks train
    stages, head = finetuned_parts(backbone, finetune, None, ctx.num_classes)
    linears = layers(head, nn.Linear)
    grid = FLATTEN_GRID**2 if config.head_pool == "flatten" else 1
    assert linears[0].in_features == channels[-1] * grid
    assert len(linears) == config.fc_layers + 1
    assert [lin.out_features for lin in linears] == [config.fc_width] * config.fc_layers + [ctx.num_classes]
    network = network_of(stages, head).eval()
    with torch.no_grad():
        assert network(torch.zeros(2, 3, 32, 32)).shape == (2, ctx.num_classes)


@pytest.mark.parametrize("ctx", [CPU_CTX, CUDA_CTX])
def test_sampled_trials_suggest_only_what_applies_within_the_devices_range(ctx: SpaceContext) -> None:
    space = get_space("scratch")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(60):
        trial = study.ask()
        config = space.suggest(trial, ctx)
        assert ("fc_width" in trial.params) == (config.fc_layers > 0)
        assert ("lr@sgd" in trial.params) == (config.optimizer == "sgd")
        assert ("lr@adam" in trial.params) == (config.optimizer in ("adam", "adamw"))
        first = trial.distributions["channels_first"]
        assert isinstance(first, optuna.distributions.IntDistribution) and first.log
        assert (first.low, first.high) == FIRST_CHANNELS[ctx.device][config.kernel_size]
        assert max(config.channels) <= MAX_CHANNELS[ctx.device] and len(config.channels) == trial.params["blocks"]
        study.tell(trial, 0.0)
    assert max(FIRST_CHANNELS["cpu"][k][1] for k in (3, 5)) <= 64 and MAX_CHANNELS["cpu"] == 128


@pytest.mark.parametrize(
    ("ctx", "batch_size"),
    [(CPU_CTX, 64), (CUDA_CTX, 64), (dataclasses.replace(CPU_CTX, train_size=100), 32)],
)
def test_the_users_cnn_is_the_first_trial_and_a_valid_one(ctx: SpaceContext, batch_size: int) -> None:
    space = get_space("scratch")
    assert space.kind == "scratch" and space.first_trials is not None and space.first_trials(ctx) == [users_cnn(ctx)]
    params = users_cnn(ctx)
    config, trial = suggested(params, ctx)
    assert trial.params == params
    assert config.channels == (32, 64, 128) and config.convs_per_block == 1 and config.kernel_size == 3
    assert config.batchnorm and config.pool == "max" and config.head_pool == "flatten"
    assert (config.fc_layers, config.fc_width, config.dropout) == (1, 512, 0.5)
    assert (config.optimizer, config.lr, config.batch_size) == ("adam", 1e-3, batch_size)


@pytest.fixture(scope="module")
def scratch_study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    """One real scratch study on all the digits: its enqueued first trial, the users' CNN, for two epochs.

    One trial, not two: a second, sampled trial costs up to 100 s on 2 CPU cores, the first about 15-30 s.
    """
    study = FinishedStudy(name="scratch-digits", folder=tmp_path_factory.mktemp("scratch"))
    args = ["--space", "scratch", "--data", "digits", "--trials", "1", "--max-epochs", "2", "--patience", "1"]
    args += ["--metric", "val_accuracy", "--seed", "0", "--study-name", study.name, "--storage", study.storage]
    args += ["--artifact-dir", str(study.artifact_dir), "--cache-dir", str(study.folder / "cache")]
    assert run_main(args) == 0
    return study


def test_a_scratch_study_learns_the_digits(scratch_study: FinishedStudy) -> None:
    study = scratch_study.load()
    record = read_record(optuna.storages.RDBStorage(scratch_study.storage), study.study_name)
    assert record is not None and record.resolved is not None
    assert record.resolved.kind == "scratch" and record.resolved.image_size == 32  # 8 px digits, rounded up to 32
    assert record.resolved.mean == record.resolved.std == (0.5, 0.5, 0.5)
    assert record.resolved.backbone == "scratch", "the record names what the networks stood on, not --backbone"
    best = study.best_trial
    assert best.number == 0 and best.params == users_cnn(CPU_CTX)
    # ten classes, chance 0.1; the users' CNN reached 0.93 after 2 epochs (an untrained one stays near 0.1)
    assert best.user_attrs["val_accuracy"] > 0.7
    assert best.user_attrs["config"]["channels"] == [32, 64, 128]


def test_export_and_predict_reproduce_the_validation_predictions(
    scratch_study: FinishedStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = scratch_study.load()
    best = study.best_trial
    bundle = tmp_path / "model"
    args = ["--study-name", study.study_name, "--storage", scratch_study.storage]
    assert results_main(["export", *args, "--out", str(bundle)]) == 0
    assert f"exported trial {best.number}" in capsys.readouterr().out

    record = read_record(optuna.storages.RDBStorage(scratch_study.storage), study.study_name)
    assert record is not None and record.split is not None
    split = record.split
    source = open_source("digits", root=tmp_path)
    data = decode_source(source, image_size=32).with_split(split)
    images, labels = data.part(VAL)
    store = open_artifact_store(scratch_study.artifact_dir)
    kept = load_trial_model(study, best, store).predict_proba(images)
    exported = load_bundle(bundle).predict_proba(images)
    np.testing.assert_allclose(exported, kept, atol=1e-5)
    assert float((exported.argmax(1) == labels.numpy()).mean()) == pytest.approx(best.user_attrs["val_accuracy"])

    folder = tmp_path / "val_images"  # the validation digits as PNG files, as a user would have them
    for index, code in enumerate(split):
        if code == SPLIT_CODES[VAL]:
            (folder / source.class_names[int(source.labels[index])]).mkdir(parents=True, exist_ok=True)
            with source.decode(index) as image:
                image.save(folder / source.class_names[int(source.labels[index])] / f"digit_{index}.png")
    out = tmp_path / "predictions.csv"
    assert results_main(["predict", "--model", str(bundle), str(folder), "--out", str(out)]) == 0
    with out.open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(labels)
    truth = [Path(r["path"]).parent.name for r in rows]
    accuracy = sum(t == r["class"] for t, r in zip(truth, rows, strict=True)) / len(rows)
    assert accuracy == pytest.approx(best.user_attrs["val_accuracy"], abs=1e-9)

    per_class = fetch_artifact(store, trial_artifacts(study, best)[PER_CLASS_FILE], tmp_path / PER_CLASS_FILE)
    assert per_class is not None
    for row in read_per_class(per_class):  # the study's own per-class validation scores, from the files on disk
        mine = [r["class"] == row["class"] for t, r in zip(truth, rows, strict=True) if t == row["class"]]
        assert len(mine) == int(row["support"])
        assert sum(mine) / len(mine) == pytest.approx(float(row["recall"]), abs=1e-4)


def test_a_scratch_studys_default_name_names_no_backbone() -> None:
    from search.cli.run import build_parser, spec_from_args

    def name(*flags: str) -> str:
        return spec_from_args(build_parser().parse_args(list(flags))).name

    assert name("--space", "scratch", "--data", "digits", "--classes", "0,1") == "scratch-digits-0_1"
    assert name("--space", "finetune", "--data", "digits") == "finetune-digits-efficientnet_lite0"
    assert name("--space", "scratch", "--study-name", "mine") == "mine"
