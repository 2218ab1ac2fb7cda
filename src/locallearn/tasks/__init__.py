"""Tasks: what a target is, how it is predicted, lost and measured (segmentation metrics for now)."""
from . import seg_metrics  # noqa: F401
