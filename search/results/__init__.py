"""Using a finished study: reading it back, the report, the dashboard, exported bundles and predictions."""

from search.results.bundles import load_bundle, save_bundle
from search.results.export import export_model
from search.results.predict import image_files, predict_files
from search.results.reading import best_trial, load_existing_study
from search.results.report import write_report

__all__ = [
    "best_trial",
    "export_model",
    "image_files",
    "load_bundle",
    "load_existing_study",
    "predict_files",
    "save_bundle",
    "write_report",
]
