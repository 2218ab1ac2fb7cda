"""Tasks: the target, criterion, predictor, post-processing and metric of each task."""
from .base import TASKS, Task, TaskMetric, check_same_task, get_task, list_tasks
from . import classification, detection, segmentation, super_resolution  # noqa: F401  (register the tasks)
from . import seg_metrics  # noqa: F401

__all__ = ["TASKS", "Task", "TaskMetric", "check_same_task", "get_task", "list_tasks"]
