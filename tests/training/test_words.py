"""Configurations in words: what a reader of the console and the report sees instead of raw parameters."""

from __future__ import annotations

import dataclasses

from search.training.configs import FeaturesConfig
from search.training.words import in_words, method
from tests.helpers import scratch_config
from tests.kinds.test_kinds import FEATURES, FINETUNE


def test_a_finetune_trial_reads_as_its_method_and_only_the_settings_that_apply() -> None:
    words = in_words(FINETUNE)
    assert words.startswith("the last stage trained with the head at block7; ")
    assert "a head of 1 hidden layer of 32 with batch norm, dropout 0.1" in words
    assert "AdamW at lr 0.003, weight decay 0.0001" in words
    assert "momentum" not in words and "augmentation" not in words, "no SGD momentum, no augmentation: left out"
    assert "label smoothing 0.1" in words and "layer decay" not in words  # one stage: no decay between stages
    staged = dataclasses.replace(FINETUNE, head_only_epochs=5, unfreeze_blocks=2, layer_decay=0.8, augment="light")
    assert method(staged) == "LP-FT of the last 2 stages"
    assert "5 head-only epochs first" in in_words(staged) and "layer decay 0.8" in in_words(staged)
    assert method(dataclasses.replace(FINETUNE, unfreeze_blocks=0)) == "frozen head"


def test_a_features_trial_names_its_classifier_layers_and_pooling() -> None:
    assert method(FEATURES) == "logistic regression"
    assert in_words(FEATURES) == (
        "logistic regression (C 0.1) on 2 layers (block6 (avg), conv_head (both), 1 L2-normalised), PCA to 16"
    )
    forest = FeaturesConfig(
        layers=("conv_head",), pooling=("avg",), l2_normalize=(True,), pca_dims=0, classifier="rf", rf_n_estimators=300
    )
    assert in_words(forest, "vgg16") == (
        "random forest (300 trees, min leaf 1, sqrt features) on 1 layer (conv_head, average-pooled, "
        "L2-normalised) (on vgg16)"
    )


def test_a_scratch_trial_reads_as_its_network() -> None:
    config = scratch_config(
        channels=(32, 64), convs_per_block=2, fc_width=64, optimizer="sgd", lr=0.05, momentum=0.9, batch_size=64
    )
    assert in_words(config) == (
        "a 2-block CNN from scratch (32-64 maps, 2 3x3 convs a block, batch norm, max pool); "
        "a linear head on the avg pool; SGD at lr 0.05, momentum 0.9; batch 64"
    )
