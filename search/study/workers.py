"""One worker's share of a study that many workers run: who it is, when it stops, what it waits for.

`--trials N` counts the whole study. A worker starts a trial only while the finished trials plus
those running elsewhere fall short of N, so the study ends with N finished trials (a few more when
workers race for the last ones) instead of each worker topping it up on its own. A trial running
elsewhere counts as "will finish": if its worker dies, the trial is failed (by the parent at once,
or by any worker once its heartbeat is older than the grace period) and queued again as a WAITING
trial with the same parameters, which the next free worker runs before anything new.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import UserError
from search.study.record import FINISHED, fail_running_trial, stale_trial_retry
from search.study.storage import GRACE_HEARTBEATS, heartbeat_interval

WORKER_ENV = "TRANSFER_SEARCH_WORKER"  # set by --workers; the SLURM and Kubernetes examples set their own index
INDEX_ENVS = (WORKER_ENV, "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
SEED_STRIDE = 10_007  # worker i's sampler seed is seed + trials so far + i * stride: distinct first draws
WORKER_ATTR = "worker"  # user attribute "host:pid" on each trial: who ran it (and whose to fail when it dies)
POLL_S = 2.0  # how often a worker with nothing to start looks at the study again
T = TypeVar("T")

log = logging.getLogger(__name__)


def worker_index() -> int:
    """This worker's number among its peers (0 when alone), from --workers, SLURM or an indexed Kubernetes Job."""
    for name in INDEX_ENVS:
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit():
                raise UserError(f"{name}={value!r} must be a worker number (0, 1, 2, ...)")
            return int(value)
    return 0


def worker_seed(seed: int, trials_so_far: int) -> int:
    """A sampler seed that differs between workers and between resumes, so none replays another's draws."""
    return seed + trials_so_far + SEED_STRIDE * worker_index()


def worker_id(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid if pid is not None else os.getpid()}"


def tagged(objective: Callable[[optuna.Trial], T]) -> Callable[[optuna.Trial], T]:
    """The objective, first recording on each trial which worker runs it."""
    me = worker_id()

    def run(trial: optuna.Trial) -> T:
        trial.set_user_attr(WORKER_ATTR, me)
        return objective(trial)

    return run


@dataclass(frozen=True)
class Tally:
    """The study's trials by state, as far as the quota cares."""

    finished: int
    running: int
    waiting: int

    @classmethod
    def of(cls, study: optuna.Study) -> Tally:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        return cls(
            finished=sum(s in FINISHED for s in states),
            running=states.count(TrialState.RUNNING),
            waiting=states.count(TrialState.WAITING),
        )

    def covers(self, trials: int) -> bool:
        """No new trial is needed: nothing is queued and what is finished or running reaches the target."""
        return self.waiting == 0 and self.finished + self.running >= trials


class StopWhenCovered:
    """Optuna callback: stop this worker once the study's target is reached or being reached by others."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if Tally.of(study).covers(self.trials):
            study.stop()


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's own check (run before every trial): fail trials without a recent heartbeat, queue their retry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def rounds(study: optuna.Study, trials: int, *, timeout: float | None) -> Iterator[float | None]:
    """Yield (the time left) whenever this worker should run trials; return once the study is done.

    In between, it waits for trials running on other workers, since each of them may end the study,
    and fails those whose worker died so that they are run again here. Past the target it still waits,
    up to the heartbeat grace period, for running trials: workers that raced past the target must not
    leave a dead peer's trial RUNNING forever.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    reached: float | None = None  # when the target was first found reached with trials still running
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        tally = Tally.of(study)
        if tally.waiting or (tally.finished < trials and not tally.covers(trials)):
            yield left
            waited, reached = False, None
            continue
        if tally.finished >= trials:
            reached = time.monotonic() if reached is None else reached
            if not tally.running or time.monotonic() - reached > GRACE_HEARTBEATS * heartbeat_interval() + POLL_S:
                return  # a dead peer's trial was failed (and its retry run) in that time; a live one ends its own
        if not waited:
            log.info(
                "%d finished, %d running on other workers: waiting for them (a dead worker's trial is run again here)",
                tally.finished,
                tally.running,
            )
            waited = True
        time.sleep(POLL_S if left is None else min(POLL_S, left))
        fail_stale_trials(study)


def fail_trials_of(study: optuna.Study, worker: str, reason: str) -> list[int]:
    """Fail the trials a dead worker left RUNNING and queue each again (same parameters) at once.

    The heartbeat would do the same after its grace period; a parent that saw its child die need not wait.
    """
    retry = stale_trial_retry(study)  # the study's own storage's: it queues the retry
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) != worker or not fail_running_trial(study, trial, reason):
            continue
        failed.append(trial.number)
        if retry is not None:
            original = copy.deepcopy(trial)  # as it ran: the retry should not inherit the reason it died
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry(study, original)
    return failed
