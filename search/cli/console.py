"""What the user sees while a study runs: a progress bar, a line per trial, a closing table."""

from __future__ import annotations

import logging
import shlex
import warnings
from pathlib import Path
from types import TracebackType

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from search.kinds import StudyKind
from search.results.costs import pareto_front
from search.results.text import format_pairs
from search.study.record import best_completed, completed_trials, finished_count, stored_test
from search.study.spec import StudySpec
from search.study.storage import mask_password
from search.study.trial_facts import TrialFacts, feasible, objective_value
from search.training.configs import BACKBONE_PARAM
from search.training.words import in_words

DEFAULTS = StudySpec()
STATE_STYLE = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.FAIL: "red"}


def format_params(params: dict[str, object], kind: StudyKind) -> str:
    """The choices that tell trials of this kind apart, on one line."""
    return format_pairs(kind.describe(params))


class StudyProgress:
    """A rich progress bar over the study's finished trials, and an Optuna callback that feeds it."""

    def __init__(self, console: Console, spec: StudySpec, kind: StudyKind, already_finished: int) -> None:
        self.console = console
        self.spec = spec
        self.kind = kind
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            speed_estimate_period=3600,  # trials take minutes: average over the run, not the last 30 s
        )
        self.task = self.progress.add_task(spec.name, total=spec.trials, completed=already_finished, best="-")

    def __enter__(self) -> StudyProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        style = STATE_STYLE.get(trial.state, "white")
        facts = TrialFacts.of(trial)
        acc = f"acc={facts.val_accuracy:.2%}" if facts.val_accuracy is not None else "acc=-"
        loss = f" loss={facts.val_loss:.4f}" if facts.val_loss is not None else ""
        seconds = facts.seconds or 0.0
        reason = facts.fail_reason or (
            "[yellow]infeasible[/] (over a deployment constraint)" if not feasible(trial) else ""
        )
        self.console.print(
            f"[{style}]#{trial.number:<3} {trial.state.name:<8}[/] {acc}{loss} "
            f"{format_params(trial.params, self.kind)} [dim]{seconds:.1f}s[/] {reason}",
            highlight=False,
            soft_wrap=True,
        )
        finished = finished_count(study)
        best = best_completed(study)
        value = objective_value(best) if best is not None else None
        best_text = f"{value:.4f}" if value is not None else "-"
        self.progress.update(self.task, completed=min(finished, self.spec.trials), best=best_text)


def dashboard_command(storage: str, artifact_dir: Path = DEFAULTS.artifact_dir) -> str:
    """The command that shows this storage's studies with their artifacts (password masked)."""
    command = "python -m search dashboard"
    if storage != DEFAULTS.storage:
        command += f" --storage {shlex.quote(mask_password(storage))}"
    if artifact_dir != DEFAULTS.artifact_dir:
        command += f" --artifact-dir {shlex.quote(str(artifact_dir))}"
    return command


def results_command(spec: StudySpec, command_name: str) -> str:
    """`python -m search report` (or another results command) on this study, its storage named when not the default."""
    command = f"python -m search {command_name} --study-name {shlex.quote(spec.name)}"
    return command + (
        f" --storage {shlex.quote(mask_password(spec.storage))}" if spec.storage != DEFAULTS.storage else ""
    )


def closing_message(study: optuna.Study, spec: StudySpec, seconds: float, kind: StudyKind) -> str:
    """What the run found, what kind of trial won, what it spent, and the commands to look closer."""
    spent = f"finished in {seconds:.0f}s"
    if spec.time_budget is not None:
        spent += f" of a {spec.time_budget:.0f}s budget"
        stopped_by_budget = sum(TrialFacts.of(t).stop_reason is not None for t in study.get_trials(deepcopy=False))
        if stopped_by_budget:
            spent += f" ({stopped_by_budget} trial{'s' if stopped_by_budget > 1 else ''} ended early by it)"
    lines = [spent + "."]
    best = best_completed(study)
    best_facts = TrialFacts.of(best) if best is not None else None
    if spec.limits and best is None and completed_trials(study):
        lines.append(f"No complete trial met {' and '.join(spec.limits_as_flags())}: loosen them, or run more trials.")
    if best is not None and best_facts is not None and best_facts.config is not None:
        accuracy = best_facts.val_accuracy
        val = f": val accuracy {accuracy:.2%}" if accuracy is not None else ""
        approach = kind.approach(best_facts.config)
        if BACKBONE_PARAM in best.params:  # a study that searched backbones: which one won
            approach += f" on {best.params[BACKBONE_PARAM]}"
        lines.append(f"Best trial {best.number} ({approach}){val}.")
    if spec.pareto:
        timed = [t for t in completed_trials(study) if feasible(t) and TrialFacts.of(t).timed]
        on_front = [(t.number, TrialFacts.of(t)) for t in pareto_front(timed)]
        front = ", ".join(f"#{n} {f.val_accuracy:.1%} {f.latency_ms_b1:.1f} ms" for n, f in on_front)
        lines.append(f"Pareto front (val accuracy, ms/image at batch 1), fastest first: {front or 'no timed trial'}.")
        lines.append(
            f"  export any of them: python -m search export --study-name {shlex.quote(spec.name)} --trial N --out DIR"
        )
    test = stored_test(study)  # only when it is for the current best trial
    if test is not None:
        lines.append(
            f"Best trial {test['trial']} on the {test['images']} held-out test images: "
            f"accuracy {test['accuracy']:.2%}, macro F1 {test['macro_f1']:.3f}."
        )
    lines += [
        "Inspect the trials (curves, confusion matrices) with:",
        f"  {dashboard_command(spec.storage, spec.artifact_dir)}",
        "Write a report with:",
        f"  {results_command(spec, 'report')}",
        "Combine the best trials into an ensemble with:",
        f"  {results_command(spec, 'ensemble')}",
    ]
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _figure(value: object, form: str, *, scale: float = 1.0) -> str:
    """A measured figure, or a dash for a trial that lacks it (its model could not be timed)."""
    return form.format(value * scale) if isinstance(value, int | float) else "-"


def summary_table(study: optuna.Study, spec: StudySpec, kind: StudyKind, *, top: int = 5) -> Table:
    """The best completed trials, best first, with their accuracy and key choices."""
    done = completed_trials(study)
    table = Table(title=f"best trials of {spec.name} ({len(done)} complete)")
    for column in ("trial", "val acc", "val loss", "epochs", "seconds", "ms/image", "size", "params"):
        table.add_column(column)
    for trial in done[:top]:
        facts = TrialFacts.of(trial)
        table.add_row(
            str(trial.number),
            _figure(facts.val_accuracy, "{:.2%}"),
            _figure(facts.val_loss, "{:.4f}"),
            _count(facts.epochs_run),
            _figure(facts.seconds, "{:.1f}"),
            _figure(facts.latency_ms_b1, "{:.1f}"),
            _figure(facts.size_bytes, "{:.3g} MB", scale=1e-6),
            format_params(trial.params, kind),
        )
    return table


def summary_lines(study: optuna.Study, spec: StudySpec, kind: StudyKind, *, top: int = 5) -> str:
    """The best trials one line each, the configuration in words: readable in a log file at any width."""
    done = completed_trials(study)
    lines = [f"best trials of {spec.name} ({len(done)} complete):"]
    for trial in done[:top]:
        facts = TrialFacts.of(trial)
        figures = [
            f"val acc {_figure(facts.val_accuracy, '{:.2%}')}",
            f"val loss {_figure(facts.val_loss, '{:.4f}')}",
            f"{_count(facts.epochs_run)} epochs",
            f"{_figure(facts.seconds, '{:.1f}')} s",
            f"{_figure(facts.latency_ms_b1, '{:.1f}')} ms/image",
            _figure(facts.size_bytes, "{:.3g} MB", scale=1e-6),
        ]
        backbone = trial.params.get(BACKBONE_PARAM)
        words = in_words(kind.config_of(facts.config), backbone) if facts.config else format_params(trial.params, kind)
        lines.append(f"  #{trial.number}: {', '.join(figures)}; {words}")
    return "\n".join(lines)


def print_summary(console: Console, study: optuna.Study, spec: StudySpec, kind: StudyKind, seconds: float) -> None:
    """The best trials (a table in a terminal; in a log file or a pipe one line a trial, never a table
    wrapped at 80 columns), then the closing message."""
    if console.is_terminal:
        console.print(summary_table(study, spec, kind))
    else:
        console.print(summary_lines(study, spec, kind), highlight=False, soft_wrap=True)
    console.print(closing_message(study, spec, seconds, kind), highlight=False, soft_wrap=True)


def configure_logging(console: Console, verbose: bool) -> None:
    """Log records through rich on `console`; Optuna's own messages only with --verbose."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    # Each trial gets its own line (with a failed trial's reason); Optuna's own per-trial logs and
    # failure tracebacks would repeat it, so they show only with --verbose.
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
