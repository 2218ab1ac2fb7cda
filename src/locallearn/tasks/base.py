"""What a task owns: the target, the network's criterion, the predictor heads end in, the metric.

"Labels are class indices" used to be hard-coded in the loop, the heads, evaluation
and the run files; each of those now asks the model's task (``UnitNet.task``, a name
in ``TASKS``). A task is stateless: one instance serves every network.
"""
from __future__ import annotations

from typing import Any, Dict, List, Protocol, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry


class TaskMetric(Protocol):
    """Accumulates over a whole evaluation set; ``compute`` gives the task's columns."""

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> Dict[str, float]: ...


class Task:
    """Base class; one subclass per task, registered in ``TASKS`` under ``name``.

    Attributes:
        name: the registry name (``classification``, ``segmentation``, ...).
        columns: the metric names ``metric().compute()`` returns, in table order; the run
            files write them as ``test_<name>``.
        primary: the column a run is judged by (progress line, ``best`` in the summary).
        target: what one batch's target is, for messages.
    """

    name: str = ""
    columns: Tuple[str, ...] = ()
    primary: str = ""
    target: str = ""

    def for_model(self, model: nn.Module) -> "Task":
        """This task bound to what ``model`` fixes (super-resolution: its upscaling factor);
        most tasks need nothing and return themselves."""
        return self

    def for_data(self, data: Any) -> "Task":
        """This task bound to what a dataset fixes (super-resolution: its evaluation rule;
        a dataset that does not fit the model raises ConfigError)."""
        return self

    def show(self, column: str, value: float) -> str:
        """A metric value for people: fractions as percentages (PSNR as dB)."""
        return f"{100 * value:.2f}%"

    def check_target(self, y: object, x: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Validate a batch's target against its images; return it as the criterion wants.

        Raise ConfigTypeError / ConfigError naming ``y`` (never a deep torch error)."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The network's criterion (also what the task predictor of a head is trained by)."""
        raise NotImplementedError

    def predictor(self, channels: int, num_classes: int, reduction: int = 1,
                  width: int = 0) -> nn.Module:
        """The small module auxiliary heads end in: features (``channels`` wide, at 1 /
        ``reduction`` of the input) -> an output ``loss`` takes; ``width``: hidden
        channels of a dense predictor (0: the task's default)."""
        raise NotImplementedError

    def predict(self, output: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Post-processing: the network's output -> the prediction (for an image of ``size``)."""
        raise NotImplementedError

    def to_device(self, y: Any, device: torch.device) -> Any:
        """A target moved to ``device`` (a tensor here; detection: a list of dicts)."""
        return y.to(device)

    def metric(self, num_classes: int, device: torch.device) -> TaskMetric:
        """A fresh accumulator of this task's metric."""
        raise NotImplementedError

    def example_target(self, batch: int, size: Tuple[int, int], num_classes: int,
                       generator: torch.Generator) -> torch.Tensor:
        """A random valid target for ``batch`` images of ``size`` (benchmarks, dry runs)."""
        raise NotImplementedError


TASKS: Registry[Task] = Registry("task")


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown one raises ConfigError listing the tasks."""
    return TASKS.get(name)


def list_tasks() -> List[str]:
    return TASKS.names()


def check_same_task(model_task: str, data_task: str, model: str, dataset: str) -> None:
    """A dataset of another task than the model's: one line naming both."""
    if model_task != data_task:
        raise ConfigError(f"model {model!r} is a {model_task} model but dataset {dataset!r} is "
                          f"a {data_task} dataset; pick a {model_task} dataset or a "
                          f"{data_task} model (locallearn list)")
