"""Memory and time measurement of a training step."""
from .memory import ActivationMeter, StepMemory, measure_step_memory

__all__ = ["ActivationMeter", "StepMemory", "measure_step_memory"]
