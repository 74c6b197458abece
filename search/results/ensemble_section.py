"""The report's "Ensemble and refit" section: what `ensemble` and `export --refit` stored, beside the trial."""

from __future__ import annotations

import optuna

from search.results.ensemble import stored_ensemble
from search.results.sections import Report
from search.results.text import markdown_table, percent
from search.study.refit import stored_refit
from search.study.trial_facts import TrialFacts


def section_ensemble(report: Report, study: optuna.Study) -> None:
    """The last ensemble (python -m search ensemble) and refit (export --refit) beside the best trial, or how to build them."""
    report.add("## Ensemble and refit", "")
    summary = stored_ensemble(study)
    refit = stored_refit(study)
    if summary is None and refit is None:
        report.add(
            f"_Neither built yet: `python -m search ensemble --study-name {study.study_name}` combines the best "
            "trials; `python -m search export --refit` trains the best one again on train + validation._",
            "",
        )
        return
    rows = []
    if summary is not None:
        best = TrialFacts.of(study.trials[summary.best_trial])
        members = ", ".join(f"#{t} x{w:.2f}" for t, w in zip(summary.trials, summary.weights, strict=True))
        refit_words = ", refit on train + validation" if summary.refit else ""
        rows.append(
            (
                f"ensemble ({members}{refit_words})",
                percent(summary.val_accuracy),
                percent(summary.test_accuracy),
                *costs(summary.latency_ms_b1, summary.size_bytes),
            )
        )
        rows.append(
            (
                f"best trial #{summary.best_trial}",
                percent(summary.best_val_accuracy),
                percent(summary.best_test_accuracy),
                *costs(best.latency_ms_b1, best.size_bytes),
            )
        )
    if refit is not None:
        facts = TrialFacts.of(study.trials[refit.trial])
        if summary is None:  # the trial itself, as the search trained it, beside its refit
            rows.append(
                (
                    f"trial #{refit.trial}",
                    percent(facts.val_accuracy),
                    percent(refit.trial_test_accuracy),
                    *costs(facts.latency_ms_b1, facts.size_bytes),
                )
            )
        name = f"trial #{refit.trial} refit on {refit.train_images} train + validation images, {refit.epochs} epochs"
        rows.append((name, "-", percent(refit.test_accuracy), *costs(facts.latency_ms_b1, facts.size_bytes)))
    report.add(*markdown_table(("model", "val acc", "test acc", "ms/image", "MB"), rows))
    report.add(
        "An ensemble is selected on validation; every model here is scored once on the test split. "
        "An ensemble's members run one after another: their latencies and sizes add up.",
        "",
    )


def costs(latency_ms: float | None, size_bytes: int | None) -> tuple[str, str]:
    return (
        "-" if latency_ms is None else f"{latency_ms:.1f}",
        "-" if size_bytes is None else f"{size_bytes / 1e6:.1f}",
    )
