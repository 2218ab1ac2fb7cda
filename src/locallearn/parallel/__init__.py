"""Multi-process training with torch.distributed (launched by torchrun)."""
from .ddp import DistContext, allreduce_grads, any_rank, collective, init_distributed

__all__ = ["DistContext", "allreduce_grads", "any_rank", "collective", "init_distributed"]
