"""`python -m search report | dashboard | export | ensemble | predict`: see and use a study's results.

Each command reads what `run_study.py` wrote and creates no study; bad input is one line on
stderr and exit code 2, like `run_study.py`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import rich
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from search.allocator import keep_freed_memory
from search.cli.console import configure_logging
from search.errors import UserError
from search.results.dashboard import DEFAULT_PORT
from search.results.ensemble import DEFAULT_SIZE
from search.results.predict import add_arguments as add_predict_arguments
from search.results.reading import DEFAULT_ARTIFACT_DIR, DEFAULT_STORAGE
from search.study.spec import DEVICES_HELP
from search.study.storage import mask_password, storage_error_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search",
        description="See and use the results of studies run by run_study.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        if name != "predict":
            sub.add_argument("--storage", default=DEFAULT_STORAGE, help="the study storage run_study.py used")
        return sub

    report = command("report", "write studies/NAME/report.md and report.html for a study")
    report.add_argument("--study-name", required=True)
    report.add_argument("--out", type=Path, default=None, help="folder for the report (default: studies/NAME)")
    report.add_argument(
        "--compare", nargs="+", default=[], metavar="NAME", help="studies in the same storage to compare it with"
    )

    dashboard = command("dashboard", "start optuna-dashboard on the study storage, with the trials' artifacts")
    dashboard.add_argument("--port", type=int, default=DEFAULT_PORT)

    export = command("export", "write the best model of a study as a self-contained folder")
    export.add_argument("--study-name", required=True)
    export.add_argument("--out", type=Path, required=True, help="a new folder for the model")
    export.add_argument("--trial", type=int, default=None, help="a completed trial's number instead of the best")
    export.add_argument(
        "--format",
        choices=("bundle", "onnx"),
        default="bundle",
        help="bundle: PyTorch weights (+ skops pipeline) for this package; onnx: one graph for onnxruntime",
    )
    export.add_argument(
        "--refit",
        action="store_true",
        help="train the trial's configuration again on train + validation for the epochs it needed, score it once "
        "on the test split, and export that model",
    )

    ensemble = command("ensemble", "a greedy ensemble of the study's best trials, scored once on the test split")
    ensemble.add_argument("--study-name", required=True)
    ensemble.add_argument("--size", type=int, default=DEFAULT_SIZE, help="at most this many distinct trials")
    ensemble.add_argument("--out", type=Path, default=None, help="a new folder to export the ensemble to")
    ensemble.add_argument(
        "--format", choices=("bundle", "onnx"), default="bundle", help="with --out: as export --format writes it"
    )
    ensemble.add_argument(
        "--refit", action="store_true", help="train each member again on train + validation (as export --refit)"
    )

    predict = command("predict", "class and probability per image, from a folder written by export or ensemble")
    add_predict_arguments(predict)

    for sub in (report, dashboard, export, ensemble):
        default = DEFAULT_ARTIFACT_DIR if sub is dashboard else None
        sub.add_argument(
            "--artifact-dir",
            type=Path,
            default=default,
            help="the trials' artifact folder" + ("" if default else " (default: the one the study was run with)"),
        )
    for sub in (report, export, ensemble, predict):
        sub.add_argument("--device", default="auto", help=DEVICES_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="log Optuna's own messages too")
    return parser


def _report(args: argparse.Namespace, console: Console) -> int:
    from search.results.compare import load_compared
    from search.results.reading import artifact_store_for, best_trial, load_existing_study
    from search.results.report import write_report
    from search.training.core import resolve_device

    study = load_existing_study(args.storage, args.study_name)
    best_trial(study)  # no completed trial: say so before anything else
    compared = load_compared(args.storage, args.compare, args.artifact_dir)  # a mistyped name too
    store = artifact_store_for(study, args.artifact_dir)
    out = args.out or Path("studies") / study.study_name
    markdown, html = write_report(study, store, out, device=resolve_device(args.device), vs=compared)
    console.print(f"wrote {markdown} and {html}", highlight=False, soft_wrap=True)
    return 0


def _dashboard(args: argparse.Namespace, console: Console) -> int:
    from search.results.dashboard import serve

    def ready(url: str) -> None:
        console.print(
            f"optuna-dashboard serves {mask_password(args.storage)} at [bold]{url}[/] (Ctrl-C stops it)",
            highlight=False,
            soft_wrap=True,
        )

    try:
        serve(args.storage, args.artifact_dir, args.port, ready=ready)
    except KeyboardInterrupt:
        console.print("dashboard stopped")
    return 0


def _export(args: argparse.Namespace, console: Console) -> int:
    from search.results.export import chosen_trial, export_model, export_refit
    from search.results.reading import artifact_store_for, load_existing_study
    from search.training.core import resolve_device

    study = load_existing_study(args.storage, args.study_name)
    chosen_trial(study, args.trial)  # no such trial: say so before looking for its files
    store = artifact_store_for(study, args.artifact_dir)
    if args.refit:
        summary = export_refit(
            study,
            store,
            args.out,
            storage=args.storage,
            trial_number=args.trial,
            device=args.device,
            onnx=args.format == "onnx",
        )
        print_exported(console, f"the refit of trial {summary.trial} of {study.study_name}", args.out)
        console.print(summary.line(), highlight=False, soft_wrap=True)
        return 0
    trial = export_model(
        study, store, args.out, trial_number=args.trial, device=resolve_device(args.device), onnx=args.format == "onnx"
    )
    print_exported(console, f"trial {trial.number} of {study.study_name}", args.out)
    return 0


def print_exported(console: Console, what: str, out: Path) -> None:
    console.print(
        f"exported {what} to {out}; try: python -m search predict --model {out} IMAGES...",
        highlight=False,
        soft_wrap=True,
    )


def _ensemble(args: argparse.Namespace, console: Console) -> int:
    from search.results.bundles import save_bundle, save_onnx_bundle
    from search.results.ensemble import build_ensemble
    from search.results.export import check_new_folder
    from search.results.reading import artifact_store_for, best_trial, load_existing_study
    from search.study.refit import Refitter
    from search.training.core import resolve_device

    study = load_existing_study(args.storage, args.study_name)
    best_trial(study)  # no completed trial: say so before anything else
    if args.out is not None:
        check_new_folder(args.out)
    store = artifact_store_for(study, args.artifact_dir)
    refitter = Refitter(study, storage=args.storage, device=args.device) if args.refit else None
    model, summary = build_ensemble(study, store, size=args.size, device=resolve_device(args.device), refitter=refitter)
    if args.out is not None:
        (save_onnx_bundle if args.format == "onnx" else save_bundle)(model, args.out)
        print_exported(console, "the ensemble", args.out)
    weights = ", ".join(f"#{t} x{w:.2f}" for t, w in zip(summary.trials, summary.weights, strict=True))
    console.print(f"members (trial x weight): {weights}", highlight=False, soft_wrap=True)
    console.print(summary.line(), highlight=False, soft_wrap=True)
    return 0


def _predict(args: argparse.Namespace, console: Console) -> int:
    from search.results.predict import image_files, load_model, predict_files, write_predictions

    predictions = predict_files(load_model(args.model, device=args.device), image_files(args.images))
    write_predictions(predictions, args.out, console)
    return 0


COMMANDS = {"report": _report, "dashboard": _dashboard, "export": _export, "ensemble": _ensemble, "predict": _predict}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # predict and export run the network batch after batch, as training does
    console = rich.get_console()  # the one progress bars outside the trials draw on too
    errors = Console(stderr=True, soft_wrap=True)
    configure_logging(errors, args.verbose)  # logs on stderr: predict's stdout stays machine-readable
    try:
        return COMMANDS[args.command](args, console)
    except UserError as exc:
        errors.print(f"[red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
        errors.print(f"[red]error:[/] the study storage failed ({storage_error_line(exc)})", highlight=False)
        return 1
    except KeyboardInterrupt:  # a refit trains for minutes: Ctrl-C ends it with one line, not a traceback
        out = getattr(args, "out", None)
        written = out is not None and out.exists()
        left = f"; {out} may hold part of the export: remove it before exporting there again" if written else ""
        errors.print(f"[yellow]interrupted[/]: the study is as it was{left}", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
