"""Evaluation: SA-Co cgF1 (oracle over several annotators) and COCO AP, of a predictions file or of
a model run over a dataset. See ``io`` for the accepted file formats and ``cgf1`` for the metric."""

from .cgf1 import evaluate_cgf1
from .coco_ap import evaluate_ap
from .io import Dataset, check_predictions, load_gt, load_gts, load_predictions
from .report import evaluate, format_report
from .runner import RunSettings, plan_jobs, run_dataset

__all__ = [
    "Dataset",
    "RunSettings",
    "check_predictions",
    "evaluate",
    "evaluate_ap",
    "evaluate_cgf1",
    "format_report",
    "load_gt",
    "load_gts",
    "load_predictions",
    "plan_jobs",
    "run_dataset",
]
