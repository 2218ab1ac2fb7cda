"""Linear CKA with minibatch-unbiased HSIC (Nguyen, Raghu & Kornblith 2021).

CKA of two representations of the same examples is ``HSIC(K, L) / sqrt(HSIC(K, K)
HSIC(L, L))`` for their Gram matrices. The plain estimator needs every example at
once; the unbiased HSIC_1 estimator (Song et al. 2012) can instead be averaged over
minibatches, and its expectation does not depend on the batch size, so CKA works on
any dataset size with memory for one batch's Gram matrices.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

#: the unbiased estimator divides by n - 3
MIN_BATCH = 4


def gram(x: torch.Tensor) -> torch.Tensor:
    """The linear-kernel Gram matrix ``X Xᵀ`` of the flattened examples, in float64
    (sums of many products lose precision in float32)."""
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    return flat @ flat.T


def _parts(k: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """``K`` with its diagonal zeroed, its row sums and its total (what HSIC_1 reuses)."""
    k = k.clone()
    k.fill_diagonal_(0.0)
    rows = k.sum(1)
    return k, rows, rows.sum()


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """The unbiased HSIC_1 estimate of two n x n Gram matrices (n >= 4)."""
    n = k.shape[0]
    if n < MIN_BATCH:
        raise ValueError(f"unbiased HSIC needs at least {MIN_BATCH} examples, got {n}")
    return _hsic(_parts(k), _parts(l), n)


def _hsic(kp: "tuple[torch.Tensor, torch.Tensor, torch.Tensor]",
          lp: "tuple[torch.Tensor, torch.Tensor, torch.Tensor]", n: int) -> torch.Tensor:
    k, k_rows, k_sum = kp
    l, l_rows, l_sum = lp
    trace = (k * l).sum()  # tr(K L) for symmetric K, L
    return (trace + k_sum * l_sum / ((n - 1) * (n - 2))
            - 2.0 * (k_rows @ l_rows) / (n - 2)) / (n * (n - 3))


class MinibatchCKA:
    """Accumulates linear CKA between every pair of ``layers_x`` x ``layers_y`` layers.

    ``update(xs, ys)`` takes one minibatch: the outputs of each x layer and of each y
    layer for the same examples (any shapes; flattened per example). ``compute()``
    gives the [layers_x, layers_y] matrix ``sum HSIC(K, L) / sqrt(sum HSIC(K, K) sum
    HSIC(L, L))``. With ``ys=None`` the y layers are the x layers (a self-similarity map,
    its Gram matrices computed once).
    """

    def __init__(self, layers_x: int, layers_y: int) -> None:
        if layers_x < 1 or layers_y < 1:
            raise ValueError(f"CKA needs at least one layer on each side, got "
                             f"{layers_x} x {layers_y}")
        self.layers_x, self.layers_y = layers_x, layers_y
        self.hsic_xy = torch.zeros(layers_x, layers_y, dtype=torch.float64)
        self.hsic_xx = torch.zeros(layers_x, dtype=torch.float64)
        self.hsic_yy = torch.zeros(layers_y, dtype=torch.float64)
        self.batches = 0

    @torch.no_grad()
    def update(self, xs: Sequence[torch.Tensor], ys: Optional[Sequence[torch.Tensor]] = None) -> None:
        """Add one minibatch (a batch of fewer than 4 examples raises: HSIC_1 is undefined)."""
        same = ys is None
        ys = xs if ys is None else ys
        if len(xs) != self.layers_x or len(ys) != self.layers_y:
            raise ValueError(f"expected {self.layers_x} x and {self.layers_y} y layers, got "
                             f"{len(xs)} and {len(ys)}")
        n = int(xs[0].shape[0])
        if n < MIN_BATCH or any(int(t.shape[0]) != n for t in [*xs, *ys]):
            raise ValueError(f"every layer needs the same >= {MIN_BATCH} examples, got "
                             f"{[int(t.shape[0]) for t in [*xs, *ys]]}")
        px = [_parts(gram(x).cpu()) for x in xs]
        py = px if same else [_parts(gram(y).cpu()) for y in ys]
        for i, a in enumerate(px):
            self.hsic_xx[i] += _hsic(a, a, n)
            for j, b in enumerate(py):
                self.hsic_xy[i, j] += _hsic(a, b, n)
        for j, b in enumerate(py):
            self.hsic_yy[j] += _hsic(b, b, n)
        self.batches += 1

    def compute(self) -> torch.Tensor:
        """The [layers_x, layers_y] CKA matrix (float64; NaN where a layer is constant)."""
        if self.batches == 0:
            raise ValueError("no minibatch was added: nothing to compute CKA from")
        denom = torch.sqrt(self.hsic_xx[:, None] * self.hsic_yy[None, :])
        return torch.where(denom > 0, self.hsic_xy / denom.clamp_min(1e-300),
                           torch.full_like(denom, float("nan")))


def linear_cka(x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Minibatch linear CKA of two representations [N, ...] of the same N examples (the
    last batch is dropped if it holds fewer than 4)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same examples, got {x.shape[0]} and {y.shape[0]}")
    acc = MinibatchCKA(1, 1)
    for s in range(0, x.shape[0], batch_size):
        if min(batch_size, x.shape[0] - s) >= MIN_BATCH:
            acc.update([x[s:s + batch_size]], [y[s:s + batch_size]])
    return float(acc.compute()[0, 0])


__all__: List[str] = ["MinibatchCKA", "gram", "hsic_unbiased", "linear_cka", "MIN_BATCH"]
