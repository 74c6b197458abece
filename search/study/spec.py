"""The study specification: every CLI choice, frozen and validated before anything runs."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from search.data.sizing import MIN_IMAGE_SIZE
from search.errors import UserError
from search.models.zoo import ZOO
from search.study.storage import mask_password
from search.training.core import DEFAULT_METRIC, METRICS

SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "hyperband", "successive-halving", "none")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"  # the trainers use CUDA or the CPU; nothing else is tested
# What a study is: reusing its name with another of these would mix incomparable trials.
LATENCY_LIMIT = "latency_ms"  # the trial constraint --max-latency-ms sets: latency at batch 1 minus the limit
SIZE_LIMIT = "size_mb"  # the trial constraint --max-size-mb sets: the model's megabytes minus the limit
LIMIT_FLAGS = {LATENCY_LIMIT: "--max-latency-ms", SIZE_LIMIT: "--max-size-mb"}
IDENTITY_FIELDS = (
    "space",
    "backbone",
    "pretrained",
    "weights",
    "from_trial",
    "image_size",
    "metric",
    "max_epochs",
    "patience",
    "max_latency_ms",
    "max_size_mb",
    "objectives",
)
ACCURACY, LATENCY = "accuracy", "latency"  # --objectives: the study's metric alone, or it and batch-1 latency
OBJECTIVE_CHOICES = ((ACCURACY,), (ACCURACY, LATENCY))


@dataclass(frozen=True)
class StudySpec:
    """What the user asked for, every flag of run_study.py; stored on the study so a resume can be checked against it.

    What the runner decided from it (kind, device, image size, weights) is a `search.study.record.Resolved`.
    """

    space: str = "finetune"
    trials: int = 50
    data: str = "digits"
    data_root: Path = Path("studies/datasets")
    classes: tuple[str, ...] | None = None  # keep only these classes of the data (--classes a,b,c)
    image_size: int | None = None  # None: the study's kind decides from the data, backbone and device
    backbone: str = "efficientnet_lite0"
    weights: Path | None = None
    pretrained: str = "imagenet"
    storage: str = "sqlite:///studies/optuna.db"
    artifact_dir: Path = Path("studies/artifacts")  # Optuna's FileSystemArtifactStore: plots, checkpoints
    cache_dir: Path = Path("studies/feature_cache")  # pooled backbone features, shared by studies and workers
    from_trial: str | None = None  # STUDY:NUMBER, a finished finetune trial whose network the features tap
    warm_start: tuple[str, ...] = ()  # earlier studies of the same space whose best configurations are queued first
    workers: int = 1  # worker processes this command starts on the study
    study_name: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str = DEFAULT_METRIC
    max_epochs: int = 12  # small sets converge in 5-10 epochs; early stopping ends most trials sooner
    patience: int = 3  # epochs without improvement before a trial stops on its own
    timeout: float | None = None
    time_budget: float | None = None  # seconds the whole command may take: trials are planned and started to fit
    # deployment constraints (Optuna trial constraints): a trial over either is infeasible, never the best
    max_latency_ms: float | None = None  # per image at batch 1 on the study's device
    max_size_mb: float | None = None  # the exported model's weights
    seed: int = 0
    device: str = "auto"
    # ("accuracy", "latency"): a Pareto study of the metric and batch-1 latency (Optuna prunes no such study)
    objectives: tuple[str, ...] = (ACCURACY,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "warm_start", tuple(self.warm_start))  # argparse and a stored record give lists
        object.__setattr__(self, "objectives", tuple(self.objectives))
        if self.objectives not in OBJECTIVE_CHOICES:
            raise UserError(
                f"--objectives {','.join(self.objectives)}: pass accuracy (the default) or accuracy,latency"
            )
        problems = []
        if self.trials < 1:
            problems.append("--trials must be at least 1")
        if self.workers < 1:
            problems.append("--workers must be at least 1")
        if self.max_epochs < 1:
            problems.append("--max-epochs must be at least 1")
        if self.patience < 1:
            problems.append("--patience must be at least 1")
        if self.classes is not None and (len(set(self.classes)) != len(self.classes) or "" in self.classes):
            problems.append("--classes must name distinct classes, separated by commas (e.g. 0,1,2)")
        if self.image_size is not None and self.image_size < MIN_IMAGE_SIZE:
            problems.append(f"--image-size must be at least {MIN_IMAGE_SIZE}")
        if self.sampler not in SAMPLERS:
            problems.append(f"--sampler must be one of {', '.join(SAMPLERS)}, not '{self.sampler}'")
        if self.pruner not in PRUNERS:
            problems.append(f"--pruner must be one of {', '.join(PRUNERS)}, not '{self.pruner}'")
        if self.metric not in METRICS:
            problems.append(f"--metric must be one of {', '.join(METRICS)}, not '{self.metric}'")
        if self.timeout is not None and self.timeout <= 0:
            problems.append("--timeout must be a positive number of seconds")
        if self.time_budget is not None and self.time_budget <= 0:
            problems.append("--time-budget must be a positive number of seconds")
        for name, limit in self._asked_limits().items():
            if limit is not None and not limit > 0:
                problems.append(f"{LIMIT_FLAGS[name]} must be a positive number")
        problems += self._backbone_problems()
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            problems.append(f"--device must be {DEVICES_HELP}, not '{self.device}'")
        if problems:
            raise UserError("; ".join(problems))

    def _backbone_problems(self) -> list[str]:
        names = self.backbones
        if not names or len(set(names)) != len(names):
            return ["--backbone must name one backbone, several distinct ones separated by commas, or zoo"]
        if len(names) == 1 and names != (ZOO,):
            return []
        several = "--backbone zoo" if names == (ZOO,) else "several backbones"
        clashes = {"--weights": self.weights is not None, "--from-trial": self.from_trial is not None}
        return [f"{flag} gives one network; it cannot go with {several}" for flag, given in clashes.items() if given]

    @property
    def backbones(self) -> tuple[str, ...]:
        """The backbones named by --backbone: one, several a study searches among, or (zoo,) for the curated list."""
        return tuple(name.strip() for name in self.backbone.split(",") if name.strip())

    def _asked_limits(self) -> dict[str, float | None]:
        return {LATENCY_LIMIT: self.max_latency_ms, SIZE_LIMIT: self.max_size_mb}

    @property
    def limits(self) -> dict[str, float]:
        """The deployment constraints asked for, by the cost they bound (search.study.objective.record_costs)."""
        return {name: limit for name, limit in self._asked_limits().items() if limit is not None}

    def limits_as_flags(self) -> list[str]:
        """The constraints as the flags that set them, e.g. `--max-latency-ms 10`, for messages and reports."""
        return [f"{LIMIT_FLAGS[name]} {limit:g}" for name, limit in self.limits.items()]

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return METRICS[self.metric]

    @property
    def pareto(self) -> bool:
        """Whether the study trades its metric against latency (two objectives) instead of the metric alone."""
        return LATENCY in self.objectives

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        """Optuna's study directions: the metric's, then latency's (lower is better) in a Pareto study."""
        return [self.direction, "minimize"] if self.pareto else [self.direction]

    def default_study_name(self, *, with_backbone: bool = True) -> str:
        """<space>-<data>[-<classes>]-<backbone>; without the backbone for kinds that stand on none (scratch)."""
        data = Path(self.data).name or self.data
        if self.classes:
            data += "-" + "_".join(self.classes)
        space = Path(self.space).stem
        name = f"{space}-{data}-{self.backbone}" if with_backbone else f"{space}-{data}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)

    @property
    def name(self) -> str:
        return self.study_name or self.default_study_name()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StudySpec:
        """The spec a study stored (`to_record`), typed again: paths as paths, classes as a tuple."""
        values = {f.name: record[f.name] for f in fields(cls) if f.name in record}
        for name in ("data_root", "artifact_dir", "cache_dir", "weights"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        if values.get("classes") is not None:
            values["classes"] = tuple(values["classes"])
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready, password-free view for the study's attributes."""
        record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        record["classes"] = list(self.classes) if self.classes else None
        record["warm_start"] = list(self.warm_start)
        record["objectives"] = list(self.objectives)
        record["storage"] = mask_password(self.storage)
        record["study_name"] = self.name
        return record
