"""`--workers N`: start N worker processes of the same command on one study, and show them as one run.

Each worker is `run_study.py` itself with `--workers 1`, the same storage and the same study name,
exactly what a user starts by hand on other machines; this process only starts them, watches the
study in the storage (one progress bar, one line per finished trial, one closing table), fails and
queues again the trial of a worker that died, and forwards Ctrl-C or SIGTERM to the workers.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console

import search
from search.cli.console import StudyProgress, print_summary
from search.data.sources import TORCHVISION_DATASETS, open_source
from search.kinds import StudyKind, get_kind
from search.study.artifacts import open_artifact_store
from search.study.evaluation import TEST_BY_PARENT_ENV, evaluate_from_record
from search.study.record import FINISHED, finished_count, stored_test
from search.study.spec import StudySpec
from search.study.storage import STORAGE_ENV, mask_password, open_storage
from search.study.workers import WORKER_ENV, fail_trials_of, worker_id
from search.training.core import resolve_device
from spaces import get_space

POLL_S = 1.0  # how often the parent reads the study and checks on its workers
STOP_WAIT_S = 60.0  # a worker asked to stop ends its trial at the next Python instruction; then it is killed
CHILD_CODE = "import sys; from search.cli.exit import exit_promptly; from search.cli.run import main; exit_promptly(main(sys.argv[1:]))"


@dataclass
class Worker:
    """One child process and the tail of what it wrote to stderr."""

    index: int
    process: subprocess.Popen[str]
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))
    handled: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def error_line(self) -> str:
        errors = [line for line in self.tail if line.startswith("error:")]
        lines = errors or [line for line in self.tail if line.strip()]
        return lines[-1] if lines else f"worker {self.index} exited with code {self.process.returncode}"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and not gpu.strip().startswith("-")]
    import torch  # only here: the parent needs nothing else of torch

    return [str(i) for i in range(torch.cuda.device_count())]


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_environments(count: int, device: str) -> list[tuple[dict[str, str], str]]:
    """Each worker's environment and where it runs: its index, one GPU (round robin) or a share of the cores."""
    gpus = visible_gpus() if device in ("auto", "cuda") else []
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, available_cores() // count))  # the user's wins
    package_root = str(Path(search.__file__).resolve().parents[1])  # the children import this same `search`
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    environments = []
    for index in range(count):
        env = {**os.environ, WORKER_ENV: str(index), "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
            environments.append((env, f"GPU {env['CUDA_VISIBLE_DEVICES']}"))
        else:
            env["OMP_NUM_THREADS"] = threads  # torch's intra-op threads: the workers do not fight for cores
            environments.append((env, f"CPU threads: {threads}"))
    return environments


def _read_stderr(worker: Worker, console: Console, verbose: bool) -> None:
    assert worker.process.stderr is not None
    for line in worker.process.stderr:
        line = line.rstrip()
        worker.tail.append(line)
        if verbose and line:
            console.print(f"worker {worker.index}: {line}", markup=False, highlight=False, soft_wrap=True)


def without_storage(argv: Sequence[str]) -> list[str]:
    """The command line less `--storage URL` / `--storage=URL`: the workers read the URL from STORAGE_ENV."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--storage":
            skip = True
        elif not arg.startswith("--storage="):
            kept.append(arg)
    return kept


def start_workers(spec: StudySpec, argv: Sequence[str], console: Console, *, verbose: bool, into: list[Worker]) -> None:
    """The same command with --workers 1 (the last flag wins), each in its own session: Ctrl-C goes through us.

    Appended to `into` one by one, so that a Ctrl-C while starting them still stops those started.
    """
    command = [sys.executable, "-c", CHILD_CODE, *without_storage(argv), "--workers", "1"]
    for index, (env, where) in enumerate(worker_environments(spec.workers, spec.device)):
        process = subprocess.Popen(
            command,
            # the URL is not on the command line, where `ps` shows it to everyone; the test split is ours to score
            env={**env, STORAGE_ENV: spec.storage, TEST_BY_PARENT_ENV: "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # their per-trial lines are ours to print, from the storage
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        worker = Worker(index, process)
        threading.Thread(target=_read_stderr, args=(worker, console, verbose), daemon=True).start()
        into.append(worker)
        console.print(f"worker {index}: pid {process.pid}, {where}", highlight=False)


class StudyWatch:
    """Reads the shared study from the storage and prints each newly finished trial once."""

    def __init__(self, storage: optuna.storages.RDBStorage, spec: StudySpec, progress: StudyProgress) -> None:
        self.storage = storage
        self.spec = spec
        self.progress = progress
        self.study: optuna.Study | None = None
        self.shown: set[int] = set()

    def poll(self) -> None:
        if self.study is None:
            try:
                self.storage.get_study_id_from_name(self.spec.name)
            except KeyError:  # the first worker has not created it yet
                return
            self.study = optuna.load_study(study_name=self.spec.name, storage=self.storage)
            done = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
            self.shown = {t.number for t in done}  # from earlier runs: counted in the bar, not listed again
            finished = sum(t.state in FINISHED for t in done)
            self.progress.progress.update(self.progress.task, completed=min(finished, self.spec.trials))
            return
        ended = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
            if t.number not in self.shown
        ]
        for trial in sorted(ended, key=lambda t: t.number):
            self.shown.add(trial.number)
            self.progress(self.study, trial)

    def recover(self, worker: Worker, console: Console) -> None:
        """A worker killed by a signal: fail its running trial now and queue it for another worker."""
        code = worker.process.returncode
        cause = signal.Signals(-code).name if code < 0 else f"exit code {code}"
        failed: list[int] = []
        if self.study is not None:
            reason = f"its worker (pid {worker.pid}) was killed by {cause}; queued again with the same parameters"
            failed = fail_trials_of(self.study, worker_id(worker.pid), reason)
        trials = ", ".join(f"#{n}" for n in failed)
        what = f"its trial {trials} failed and queued again" if failed else "it was running no trial"
        console.print(
            f"[red]worker {worker.index} (pid {worker.pid}) was killed by {cause}[/]; {what}", highlight=False
        )


def stop_workers(workers: Sequence[Worker], watch: StudyWatch, console: Console) -> None:
    """SIGTERM each running worker (it fails its trial and exits 130); a second Ctrl-C kills them."""
    alive = [w for w in workers if w.process.poll() is None]
    console.print(f"[yellow]stopping {len(alive)} workers[/] (their running trials are marked failed)...")
    for worker in alive:
        worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    try:
        for worker in alive:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise KeyboardInterrupt from None
    except KeyboardInterrupt:  # impatient, or stuck: kill, and fail their trials ourselves
        for worker in alive:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
                watch.recover(worker, console)


def run_workers(
    spec: StudySpec, argv: Sequence[str], console: Console, errors: Console, *, verbose: bool, started: float
) -> int:
    """Start `spec.workers` workers on one study, show their progress as one, and return the exit code."""
    kind = get_kind(get_space(spec.space).kind)  # cheap checks first: a typo must not start N processes that all say so
    resolve_device(spec.device)
    if spec.data.lower() not in TORCHVISION_DATASETS:  # a folder is listed in a moment; a download is the workers' job
        open_source(spec.data, root=spec.data_root, classes=spec.classes)
    storage = open_storage(spec.storage)  # creates the database and its tables once, before the workers race
    console.print(
        f"{spec.workers} workers on study [bold]{spec.name}[/] in {mask_password(spec.storage)}", highlight=False
    )
    progress = StudyProgress(console, spec, kind, 0)
    watch = StudyWatch(storage, spec, progress)
    workers: list[Worker] = []
    interrupted = False
    with progress:
        try:
            start_workers(spec, argv, console, verbose=verbose, into=workers)
            while any(not w.handled for w in workers):
                time.sleep(POLL_S)
                watch.poll()
                for worker in workers:
                    if worker.handled or worker.process.poll() is None:
                        continue
                    worker.handled = True
                    if worker.process.returncode < 0:
                        watch.recover(worker, console)
            watch.poll()
        except KeyboardInterrupt:
            interrupted = True
            stop_workers(workers, watch, console)
            watch.poll()
    return _outcome(spec, kind, workers, watch, console, errors, interrupted=interrupted, started=started)


def _outcome(
    spec: StudySpec,
    kind: StudyKind,
    workers: Sequence[Worker],
    watch: StudyWatch,
    console: Console,
    errors: Console,
    *,
    interrupted: bool,
    started: float,
) -> int:
    study = watch.study
    finished = finished_count(study) if study is not None else 0
    if interrupted:
        errors.print(
            f"[yellow]interrupted[/]: the workers' running trials are marked failed; {finished} finished trials "
            "are saved. Run the same command to resume.",
            highlight=False,
        )
        return 130
    failures = [w for w in workers if w.process.returncode not in (0, 130) and w.process.returncode >= 0]
    lines = list(dict.fromkeys(w.error_line() for w in failures))  # N workers with one bad input: one line
    complete = study is not None and (
        finished >= spec.trials or ((spec.timeout or spec.time_budget) is not None and not failures)
    )
    if study is None or not complete:
        for line in lines or [f"the workers ended with {finished} of {spec.trials} finished trials"]:
            line = line if line.startswith("error:") else f"error: {line}"
            errors.print(line if lines else f"{line}; run the same command to resume", markup=False, highlight=False)
        return 2 if any(w.process.returncode == 2 for w in failures) else 1
    for line in lines:  # the others finished the study, but a crashed worker deserves a line
        errors.print(f"warning: a worker stopped early ({line})", markup=False, highlight=False)
    if stored_test(study) is None:
        console.print("scoring the best trial on the held-out test split", highlight=False)
        evaluate_from_record(study, open_artifact_store(spec.artifact_dir), device=resolve_device(spec.device))
    print_summary(console, study, spec, kind, time.monotonic() - started)
    return 0
