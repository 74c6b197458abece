"""Using a finished study: reading it back, the report, the dashboard, exported bundles and predictions."""

from search._lazy import lazy_exports

_EXPORTS = {
    "best_trial": "search.results.reading",
    "load_existing_study": "search.results.reading",
    "export_model": "search.results.export",
    "image_files": "search.results.predict",
    "predict_files": "search.results.predict",
    "load_bundle": "search.results.bundles",
    "save_bundle": "search.results.bundles",
    "write_report": "search.results.report",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)  # imported on first use: an ONNX prediction needs no torch

__all__ = sorted(_EXPORTS)
