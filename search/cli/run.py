"""`run_study.py`: parse the flags into a StudySpec, run the study, show the results."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import optuna
import rich
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from search.cli.console import StudyProgress, configure_logging, print_summary
from search.cli.launcher import run_workers
from search.errors import StudyAborted, UserError
from search.kinds import get_kind, stands_on_backbone
from search.models import zoo
from search.models.backbones import list_backbones
from search.study import runner
from search.study.record import finished_count
from search.study.spec import DEVICES_HELP, PRUNERS, SAMPLERS, StudySpec
from search.study.storage import STORAGE_ENV, storage_error_line
from search.training.core import METRICS
from spaces import get_space, list_spaces


def class_list(text: str) -> tuple[str, ...]:
    """`a,b,c` -> ('a', 'b', 'c'), spaces around names dropped."""
    return tuple(name.strip() for name in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    defaults = StudySpec()
    parser = argparse.ArgumentParser(
        prog="run_study.py",
        description="Run (or resume) an Optuna study of transfer-learning configurations.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # --workers strips --storage from its workers' command lines: no --stor=URL may slip by
    )
    parser.add_argument(
        "--space",
        default=defaults.space,
        help=f"one of {', '.join(list_spaces())}, or a .py file defining suggest(trial, ctx)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=defaults.trials,
        help="finished trials wanted in the study in total (re-running tops it up)",
    )
    parser.add_argument(
        "--data",
        default=defaults.data,
        help="'digits', a torchvision name (cifar10, ...), or a folder of class sub-folders",
    )
    parser.add_argument(
        "--classes",
        type=class_list,
        default=None,
        metavar="A,B,C",
        help="keep only these classes of the data (e.g. digits 0,1,2,3,4 to train a source for --from-trial)",
    )
    parser.add_argument(
        "--data-root", type=Path, default=defaults.data_root, help="where torchvision datasets live or are downloaded"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="square input size; default: the backbone's native size (224); with --pretrained none, the images' own",
    )
    parser.add_argument(
        "--backbone",
        default=defaults.backbone,
        help=f"one of {', '.join(list_backbones())}, or any timm CNN or ViT by name (e.g. convnext_tiny, "
        "vit_small_patch16_224); several separated by commas make the backbone a searched choice; 'zoo' searches "
        "a curated list, cheap to strong (docs/backbones.md)",
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="a state-dict file for the backbone instead of its ImageNet weights"
    )
    parser.add_argument(
        "--pretrained",
        default=defaults.pretrained,
        choices=("imagenet", "none"),
        help="'none' trains the backbone from random init on purpose",
    )
    parser.add_argument(
        "--storage",
        default=os.environ.get(STORAGE_ENV) or defaults.storage,
        help=f"Optuna RDB URL: sqlite:///file.db or postgresql://user@host/db (default: ${STORAGE_ENV} if set, "
        "which keeps a password off the command line)",
    )
    parser.add_argument(
        "--artifact-dir",
        type=Path,
        default=defaults.artifact_dir,
        help="where trial artifacts (curves, confusion matrices, checkpoints) are stored",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=defaults.cache_dir,
        help="where decoded images and extracted backbone features are cached",
    )
    parser.add_argument(
        "--objectives",
        type=lambda text: tuple(part.strip() for part in text.split(",")),
        default=defaults.objectives,
        metavar="accuracy[,latency]",
        help="accuracy,latency: a Pareto study of the metric and batch-1 latency; its report lists the front and "
        "export --trial N takes any trial of it (Optuna prunes no multi-objective study: pruning is off there)",
    )
    parser.add_argument(
        "--max-latency-ms",
        type=float,
        default=None,
        metavar="MS",
        help="a deployment constraint: trials slower than this per image (batch 1, on the study's device) are "
        "infeasible and never the best; the search and its pruner go on as usual",
    )
    parser.add_argument(
        "--max-size-mb",
        type=float,
        default=None,
        metavar="MB",
        help="a deployment constraint: trials whose exported model weighs more are infeasible and never the best",
    )
    parser.add_argument(
        "--from-trial",
        default=None,
        metavar="STUDY:NUMBER",
        help="stand on the network a finished finetune or scratch trial trained (same storage): --space finetune "
        "cuts and trains it further under a new head, --space features taps its layers",
    )
    parser.add_argument(
        "--warm-start",
        nargs="+",
        type=str,
        default=(),
        metavar="STUDY",
        help="earlier studies of the same space (same storage): their best configurations run first, with what "
        "does not apply here (another backbone's cut points, ...) left to the sampler",
    )
    parser.add_argument("--workers", type=int, default=defaults.workers, help="worker processes to start on this study")
    parser.add_argument("--study-name", default=None, help="default: <space>-<data>-<backbone>")
    parser.add_argument("--sampler", default=defaults.sampler, choices=SAMPLERS)
    parser.add_argument("--pruner", default=defaults.pruner, choices=PRUNERS)
    parser.add_argument(
        "--metric",
        default=defaults.metric,
        choices=tuple(METRICS),
        help="what the study optimises and trials report each epoch",
    )
    parser.add_argument("--max-epochs", type=int, default=defaults.max_epochs)
    parser.add_argument(
        "--patience", type=int, default=defaults.patience, help="epochs without improvement before a trial stops itself"
    )
    parser.add_argument("--timeout", type=float, default=None, help="stop starting new trials after this many seconds")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the wall time the whole command may take: trials are planned to fit, none starts that would not, "
        "and a running one ends at its best epoch when the time is up; with --trials, whichever comes first",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help=DEVICES_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="log Optuna's own messages too")
    return parser


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    """Every StudySpec field has a flag of the same name; a scratch study's default name names no backbone."""
    spec = StudySpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(StudySpec)})
    if spec.study_name is None and not stands_on_backbone(get_kind(get_space(spec.space).kind)):
        return dataclasses.replace(spec, study_name=spec.default_study_name(with_backbone=False))
    return spec


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None, *, started: float | None = None) -> int:
    """Run the study; bad input exits 2 with one line, Ctrl-C exits 130 with the study saved.

    `started` (time.monotonic()) is when the command began, if before this call: what --time-budget counts from.
    """
    args = build_parser().parse_args(argv)
    console = rich.get_console()  # the one progress bars outside the trials draw on too
    errors = Console(stderr=True, soft_wrap=True)  # one line, however narrow the terminal
    configure_logging(console, args.verbose)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started as a background job, which ignores it
    started = time.monotonic() if started is None else started
    study = None
    try:
        spec = spec_from_args(args)
        if spec.workers > 1:  # this process starts the workers, then shows their shared study as one run
            argv = sys.argv[1:] if argv is None else argv
            return run_workers(spec, argv, console, errors, verbose=args.verbose, started=started)
        prepared = runner.prepare(spec, started=started)
        study, spec, data = prepared.study, prepared.spec, prepared.data
        counts = data.split_counts()
        console.print(
            f"study [bold]{spec.name}[/]: {data.name} ({len(data.labels)} images, {data.num_classes} classes, "
            f"train/val/test {counts['train']}/{counts['val']}/{counts['test']}, {data.image_size}px), "
            f"{_backbones_line(prepared)} on {prepared.resolved.device}, {spec.metric} {spec.direction}d"
            + (
                " against latency (a Pareto study: no pruning, Optuna prunes no multi-objective study)"
                if spec.pareto
                else ""
            ),
            highlight=False,
        )
        for name, setup in prepared.setups.items():
            if spec.backbones == (zoo.ZOO,):
                console.print(f"  {name}: {zoo.why(name)}", highlight=False)
            if setup.plan is not None:
                mine = f"on {name}, " if len(prepared.setups) > 1 else ""
                console.print(mine + setup.plan.summary(), highlight=False)
        already = finished_count(study)
        if already >= spec.trials:
            console.print(
                f"the study already has {already} finished trials (asked for {spec.trials}); raise --trials to run more"
            )
        with StudyProgress(console, spec, prepared.resources.kind, already) as progress:
            runner.run(prepared, callbacks=[progress])
    except (UserError, StudyAborted) as exc:
        errors.print(f"[red]error:[/] {exc}", highlight=False)
        return exc.exit_code
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
        reason = storage_error_line(exc)
        errors.print(
            f"[red]error:[/] the study storage failed ({reason}); run the same command to resume",
            highlight=False,
        )
        return 1
    except KeyboardInterrupt:
        if study is None:
            errors.print("[yellow]interrupted[/] before the first trial; nothing was run")
            return 130
        errors.print(
            f"[yellow]interrupted[/]: the running trial is marked failed; {finished_count(study)} finished trials are saved. Run the same command to resume."
        )
        return 130
    print_summary(console, study, spec, prepared.resources.kind, time.monotonic() - started)
    return 0


def _backbones_line(prepared: runner.PreparedStudy) -> str:
    if len(prepared.setups) == 1:
        return f"{prepared.resources.backbone.name} ({prepared.resolved.backbone_weights})"
    return f"searching backbones {', '.join(prepared.setups)}"


if __name__ == "__main__":
    sys.exit(main())
