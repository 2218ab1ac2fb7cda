"""Memory and time measurement of a training step."""
from .live import LivePeak, live_peak
from .memory import ActivationMeter, StepMemory, measure_step_memory

__all__ = ["ActivationMeter", "LivePeak", "StepMemory", "live_peak", "measure_step_memory"]
