"""Running a study: the spec, its typed record, storage, runner, objective, workers, checkpoints, test evaluation."""

from search.study.record import StudyRecord, read_record, record_of
from search.study.runner import PreparedStudy, prepare, run
from search.study.spec import StudySpec
from search.study.storage import open_storage
from search.study.trained import load_trial_model

__all__ = [
    "PreparedStudy",
    "StudyRecord",
    "StudySpec",
    "load_trial_model",
    "open_storage",
    "prepare",
    "read_record",
    "record_of",
    "run",
]
