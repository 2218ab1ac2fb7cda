"""Loss helpers shared by the head families (SupCon, PredSim's similarity matrix)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


SUPCON_MEANS = ("positives", "all")


def supcon_loss(features: torch.Tensor, labels: torch.Tensor,
                temperature: float = 0.07, mean: str = "positives") -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), one view per sample.

    ``features``: [B, D], already L2-normalised. For anchor i with positives P(i)
    (same label, j != i): ``l_i = -1/|P(i)| sum_p log softmax_{a != i}(z_i.z_a / T)_p``.
    ``mean="positives"``: anchors without a positive are skipped, the loss is the mean
    over the others (0, still attached to the graph, if no anchor has a positive);
    ``mean="all"``: the mean over every anchor, one without a positive counting as 0
    (the reference code's SupConLoss).
    """
    # float32: the 1/T-scaled logits and the exp-sum are not safe in half precision.
    z = features.float()
    n = z.shape[0]
    logits = z @ z.t() / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    # Removing the diagonal from the denominator = Khosla's "a != i".
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    labels = labels.view(-1)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    num_pos = pos.sum(1)
    # Masks instead of `keep.any()` / boolean indexing: no data-dependent branch or shape,
    # so no host sync per head and step on a GPU.
    keep = (num_pos > 0).to(z.dtype)
    # where(): -inf * 0 on the diagonal would give NaN.
    pos_log_prob = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1)
    per_anchor = -pos_log_prob / num_pos.clamp_min(1).to(z.dtype)
    if mean == "all":  # an anchor without a positive has pos_log_prob 0: it counts as 0
        return per_anchor.mean()
    return (per_anchor * keep).sum() / keep.sum().clamp_min(1.0)


def similarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """Adjusted cosine similarity [B, B] of Nøkland & Eidnes' local-loss code.

    4-D inputs with more than 3 channels and H > 1 are summarised by the
    per-channel standard deviation over space; otherwise they are flattened.
    Each row is centred over its features and L2-normalised; the result is
    clamped to [-1, 1].
    """
    x = x.float()  # std / normalisation in float32 under autocast
    if x.dim() == 4:
        if x.shape[1] > 3 and x.shape[2] > 1:
            x = x.flatten(2).std(dim=2)
        else:
            x = x.flatten(1)
    xc = x - x.mean(dim=1, keepdim=True)
    xn = xc / (1e-8 + xc.pow(2).sum(dim=1, keepdim=True).sqrt())
    return (xn @ xn.t()).clamp(-1.0, 1.0)


def label_similarity(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``similarity_matrix`` of the one-hot labels, as the reference computes it.

    Because rows are centred first this is 1 for equal labels and
    ``-1/(num_classes-1)`` otherwise (not 0).
    """
    return similarity_matrix(F.one_hot(target, num_classes).float())
