"""The report's answer-first sections: the best model in words, its scores and costs, the baseline, the methods.

Then, last in the report, the settings that differ from the defaults.
"""

from __future__ import annotations

import statistics
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.results.compare import wall_time
from search.results.sections import Report, data_record, num
from search.results.text import format_pairs, markdown_table, percent
from search.study.record import completed_trials
from search.study.spec import StudySpec
from search.study.trial_facts import TrialFacts, feasible
from search.training.configs import BACKBONE_PARAM
from search.training.words import in_words, method

ALWAYS_SHOWN = ("space", "data", "backbone")  # shown even at their defaults: what the study is
HIDDEN = ("study_name",)  # in the report's title already


def section_answer(
    report: Report, study: optuna.Study, best: FrozenTrial, test: dict[str, Any] | None, untested: str
) -> None:
    """What a reader came for, in a few lines: the best model in words, its scores, costs, and the baseline."""
    facts = TrialFacts.of(best)
    report.add(f"# Study report: {study.study_name}", "")
    report.add(f"**Best model**: trial {best.number}, {trial_words(report, best)}.", "")
    val_images = data_record(report).get("split_counts", {}).get("val", "?")
    test_header = f"test ({test['images']} images)" if test else "test"
    rows = [
        ("accuracy", percent(facts.val_accuracy), percent(test["accuracy"]) if test else "-"),
        ("macro F1", num(facts.val_macro_f1, 3), num(test["macro_f1"], 3) if test else "-"),
    ]
    report.add(*markdown_table(("", f"validation ({val_images} images)", test_header), rows))
    report.add(" ".join(filter(None, (_costs_sentence(report, facts), _study_sentence(study)))), "")
    if report.record.spec is not None and report.record.spec.limits:
        report.add(_constraints_sentence(report.record.spec, study), "")
    report.add(_against_first_trials(report, study, best), "")
    if test:
        report.add("_The test split was never seen by the search: only this model was scored on it, once._", "")
    else:
        report.add(f"_Not evaluated on the test split: {untested}._", "")


def trial_words(report: Report, trial: FrozenTrial) -> str:
    """The trial's configuration in words (search.training.words), its backbone named where the study searched it."""
    config = TrialFacts.of(trial).config
    if config is None:
        return format_pairs(sorted(trial.params.items()))
    return in_words(report.record.kind().config_of(config), trial.params.get(BACKBONE_PARAM))


def _costs_sentence(report: Report, facts: TrialFacts) -> str:
    if facts.latency_ms_b1 is None:
        return ""
    device = report.record.resolved.device if report.record.resolved else "its device"
    size = f", {facts.size_bytes / 1e6:.1f} MB" if facts.size_bytes is not None else ""
    return f"It takes {facts.latency_ms_b1:.1f} ms per image (batch 1, {device}){size}."


def _constraints_sentence(spec: StudySpec, study: optuna.Study) -> str:
    asked = " and ".join(f"`{flag}`" for flag in spec.limits_as_flags())
    done = completed_trials(study)
    return f"Within {asked}: {sum(feasible(t) for t in done)} of {len(done)} complete trials met them; the others are never the best."


def _study_sentence(study: optuna.Study) -> str:
    counts = {s: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    done = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n)
    span = wall_time(study)
    took = f" in {_duration(span.total_seconds())}" if span else ""
    return f"The study ran {sum(counts.values())} trials ({done}){took}."


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _against_first_trials(report: Report, study: optuna.Study, best: FrozenTrial) -> str:
    """The best model against the known-good recipes every study starts with (the enqueued first trials)."""
    first = [t for t in study.get_trials(deepcopy=False) if "fixed_params" in t.system_attrs]
    if not first:
        return "_The study started from no standard recipe, so there is no baseline to compare with._"
    mine = TrialFacts.of(best).val_accuracy
    kind = report.record.kind()
    parts = []
    for trial in first:
        facts = TrialFacts.of(trial)
        what = method(kind.config_of(facts.config)) if facts.config else "recipe"
        if BACKBONE_PARAM in trial.params:
            what += f" on {trial.params[BACKBONE_PARAM]}"
        if facts.val_accuracy is None or mine is None:
            parts.append(f"#{trial.number} {what}: {trial.state.name.lower()}")
        elif trial.number == best.number:
            parts.append(f"#{trial.number} {what}: {facts.val_accuracy:.1%} val (the best model itself)")
        else:
            gain = 100 * (mine - facts.val_accuracy)
            parts.append(f"#{trial.number} {what}: {facts.val_accuracy:.1%} val ({gain:+.1f} points for the best)")
    return "Against the standard first trials every study starts with: " + "; ".join(parts) + "."


def section_methods(report: Report, study: optuna.Study) -> None:
    """The best trial of each method (frozen head, LP-FT, stages trained; or classifier), per backbone searched."""
    kind = report.record.kind()
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in completed_trials(study):  # best first
        config = TrialFacts.of(trial).config
        if config is None or not feasible(trial):  # over a deployment constraint: not a method's answer
            continue
        on = f" on {trial.params[BACKBONE_PARAM]}" if BACKBONE_PARAM in trial.params else ""
        groups.setdefault(method(kind.config_of(config)) + on, []).append(trial)
    report.add("## Methods compared", "")
    rows = []
    for name, trials in groups.items():
        best = TrialFacts.of(trials[0])
        seconds = [TrialFacts.of(t).seconds or 0.0 for t in trials]
        latency = f"{best.latency_ms_b1:.1f}" if best.latency_ms_b1 is not None else "-"
        rows.append(
            (
                name,
                len(trials),
                f"#{trials[0].number}",
                percent(best.val_accuracy),
                num(best.val_loss),
                f"{statistics.median(seconds):.1f}",
                latency,
            )
        )
    header = ("method", "complete trials", "best", "val acc", "val loss", "median s a trial", "ms/image")
    report.add(*markdown_table(header, rows))


def section_settings(report: Report) -> None:
    """What was asked where it differs from the defaults, and what the runner decided: no raw dump."""
    spec, resolved = report.record.spec, report.record.resolved
    report.add("## Settings", "")
    asked = spec.to_record() if spec else {}
    defaults = StudySpec().to_record()
    rows = [
        (key, value)
        for key, value in asked.items()
        if key not in HIDDEN and (key in ALWAYS_SHOWN or value != defaults.get(key))
    ]
    if resolved is not None:
        rows += [
            ("device", resolved.device),
            ("image size", f"{resolved.image_size} px"),
            (
                "weights",
                ", ".join(f"{name}: {facts['weights']}" for name, facts in resolved.backbones.items())
                if resolved.backbones
                else resolved.backbone_weights,
            ),
        ]
    report.add(*markdown_table(("setting", "value"), rows))
    report.add("_Every other flag was left at its default (`python run_study.py --help`)._", "")
    data = data_record(report)
    if data:
        classes = data.get("classes", [])
        shown = ", ".join(classes[:30]) + (f", ... ({len(classes)} in all)" if len(classes) > 30 else "")
        splits = data.get("split_counts", {})
        report.add(
            f"Data: {data.get('name')}, {data.get('images')} images in {len(classes)} classes ({shown}); "
            f"train/val/test {splits.get('train')}/{splits.get('val')}/{splits.get('test')} at {data.get('image_size')} px.",
            "",
        )
