"""What a trained run has learned, block by block: linear probes, CKA, Grad-CAM.

``analyze_run`` writes one run's analysis (``locallearn analyze``); ``compare_runs`` puts
several runs side by side (``locallearn compare``). The pieces work on any tensors too.
"""
from .cka import MinibatchCKA, gram, hsic_unbiased, linear_cka
from .compare import compare_runs
from .features import block_ends, probe_features, unit_cka, unit_outputs
from .gradcam import grad_cam, localnet_gradcam
from .probe import pool, train_probe
from .report import FILES, analyze_run

__all__ = ["FILES", "MinibatchCKA", "analyze_run", "block_ends", "compare_runs", "grad_cam",
           "gram", "hsic_unbiased", "linear_cka", "localnet_gradcam", "pool",
           "probe_features", "train_probe", "unit_cka", "unit_outputs"]
