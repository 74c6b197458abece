"""`python -m search export`: the study's best model as a self-contained folder for `predict`."""

from __future__ import annotations

from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError
from search.results.bundles import save_bundle, save_onnx_bundle
from search.results.reading import best_trial
from search.study.refit import RefitSummary, refit_trial
from search.study.trained import load_trial_model


def chosen_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The best completed trial, or the completed trial with this number."""
    if number is None:
        return best_trial(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials or trials[number].state != TrialState.COMPLETE:
        state = trials[number].state.name.lower() if number in trials else "not in the study"
        raise UserError(f"trial {number} of study '{study.study_name}' is {state}; pass a completed trial's number")
    return trials[number]


def check_new_folder(out: Path) -> None:
    """A one-line error unless `out` is a new or empty folder: an export never writes over files in use."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not an empty folder; pick a new one")


def export_model(
    study: optuna.Study,
    store: FileSystemArtifactStore,
    out: Path,
    *,
    trial_number: int | None = None,
    device: torch.device,
    onnx: bool = False,
) -> FrozenTrial:
    """Write the trial's model to `out` (a bundle, or with `onnx` one ONNX graph); never over a folder in use."""
    check_new_folder(out)
    trial = chosen_trial(study, trial_number)
    model = load_trial_model(study, trial, store, device=device)
    (save_onnx_bundle if onnx else save_bundle)(model, out)
    return trial


def export_refit(
    study: optuna.Study,
    store: FileSystemArtifactStore,
    out: Path,
    *,
    storage: str,
    trial_number: int | None = None,
    device: str,
    onnx: bool = False,
) -> RefitSummary:
    """Refit the trial's configuration on train + validation (search.study.refit) and write that model to `out`."""
    check_new_folder(out)
    trial = chosen_trial(study, trial_number)
    model, summary = refit_trial(study, trial, store, storage=storage, device=device)
    (save_onnx_bundle if onnx else save_bundle)(model, out)
    return summary
