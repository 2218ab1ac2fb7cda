"""Walking a trained network unit by unit: the outputs that probes and CKA read.

Nothing here keeps a graph (``torch.no_grad``). A block's output is the output of its
last *body* unit: for blocks 0..K-2 that is what ``LocalNet._walk`` yields; for the last
block it is the feature before the task unit (the network's representation, not its
scores), so block j always sits at unit ``net.ranges[j][1] - 1`` and lines up with the
unit of the same index in another run (an E2E run has one block but the same units).
"""
from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..bank import FeatureBank
from ..local_net import LocalNet
from ..nets.units import UnitNet, run_unit
from .cka import MIN_BATCH, MinibatchCKA
from .probe import pool

Net = Union[LocalNet, UnitNet]
#: pixels drawn per image for a segmentation probe (bounds memory at any resolution)
PIXELS_PER_IMAGE = 16
#: tasks whose targets give a probe a class per example (or per pixel)
PROBE_TASKS = ("classification", "segmentation", "detection")


def _model(net: Net) -> UnitNet:
    return net.model if isinstance(net, LocalNet) else net


def unit_outputs(net: Net, x: torch.Tensor) -> Iterator[Tuple[int, torch.Tensor]]:
    """Yield ``(i, output of body unit i)`` for every body unit of ``net`` (a LocalNet or a
    UnitNet) on input ``x``, feeding units that read the feature bank from one made for
    ``x``. Run it under ``torch.no_grad`` unless a graph is wanted."""
    model = _model(net)
    mean = getattr(net, "mean", None)
    std = getattr(net, "std", None)
    bank = FeatureBank(x, mean, std)
    h = x
    for i in range(model.num_body_units):
        h = run_unit(model.units[i], model.unit_info[i], h, bank)
        yield i, h


def block_ends(net: LocalNet) -> List[int]:
    """The body unit each block ends at (``ranges[j][1] - 1``)."""
    return [end - 1 for _, end in net.ranges]


def limited(batches: Iterable[Tuple[torch.Tensor, object]], samples: int,
            desc: str = "", progress: bool = False) -> Iterator[Tuple[torch.Tensor, object]]:
    """The first ``samples`` examples of ``batches`` (the last batch cut to fit), with a
    tqdm bar over the batches when ``progress``."""
    total = None
    if hasattr(batches, "__len__"):
        size = getattr(batches, "batch_size", None)
        total = len(batches)  # type: ignore[arg-type]
        if size:
            total = min(total, -(-samples // int(size)))
    seen = 0
    for x, y in tqdm(batches, desc=desc, total=total, disable=not progress, leave=False):
        if seen >= samples:
            break
        take = min(samples - seen, int(x.shape[0]))
        seen += take
        yield (x[:take], y[:take]) if take < x.shape[0] else (x, y)
        if seen >= samples:
            break


def _probe_targets(task: str, h: torch.Tensor, y: object, generator: torch.Generator,
                   layout: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (features [n, C], labels [n]) a probe learns from one unit's batch output."""
    if task == "segmentation" and layout == "maps" and h.dim() == 4:
        # a dense task's linear probe is per pixel (a 1x1 conv): features at a few pixels,
        # each labelled by the mask at that place
        mask = F.interpolate(y[:, None].float(), size=h.shape[-2:], mode="nearest")[:, 0].long()  # type: ignore[index]
        feats = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        labels = mask.reshape(-1)
        per = h.shape[-2] * h.shape[-1]
        pick = torch.cat([b * per + torch.randperm(per, generator=generator)[:PIXELS_PER_IMAGE]
                          for b in range(h.shape[0])]).to(labels.device)
        feats, labels = feats[pick], labels[pick]
        keep = labels != 255  # ignored pixels have no class
        return feats[keep], labels[keep]
    feats = pool(h, layout)
    if task == "detection":
        # an image's class for a probe: that of its largest box (images without one drop out)
        labels, keep = [], []
        for t in y:  # type: ignore[union-attr]
            boxes, cls = t["boxes"], t["labels"]
            if len(cls):
                area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                labels.append(int(cls[area.argmax()]))
            keep.append(bool(len(cls)))
        mask = torch.tensor(keep, device=feats.device)
        return feats[mask], torch.tensor(labels, dtype=torch.long)
    return feats, y  # type: ignore[return-value]


@torch.no_grad()
def probe_features(net: LocalNet, batches: Iterable[Tuple[torch.Tensor, object]], samples: int,
                   *, seed: int = 0, progress: bool = False,
                   desc: str = "features") -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per body unit, the pooled features and labels of the first ``samples`` examples
    (on the CPU, float32): what ``train_probe`` fits."""
    task = net.task.name
    model = net.model
    g = torch.Generator().manual_seed(seed)
    feats: List[List[torch.Tensor]] = [[] for _ in range(model.num_body_units)]
    labels: List[List[torch.Tensor]] = [[] for _ in range(model.num_body_units)]
    for x, y in limited(batches, samples, desc, progress):
        for i, h in unit_outputs(net, x):
            f, l = _probe_targets(task, h, y, g, model.unit_info[i].layout)
            feats[i].append(f.float().cpu())
            labels[i].append(torch.as_tensor(l).long().cpu())
    return [(torch.cat(f) if f else torch.zeros(0, 1), torch.cat(l) if l else
             torch.zeros(0, dtype=torch.long)) for f, l in zip(feats, labels)]


def _renormalise(x: torch.Tensor, src: Tuple[Sequence[float], Sequence[float]],
                 dst: Tuple[Sequence[float], Sequence[float]]) -> torch.Tensor:
    """``x`` normalised with ``src`` (mean, std) as normalised with ``dst`` instead (two
    runs of one dataset may have computed slightly different statistics)."""
    if tuple(src[0]) == tuple(dst[0]) and tuple(src[1]) == tuple(dst[1]):
        return x
    shape = (1, -1, 1, 1)

    def t(v: Sequence[float]) -> torch.Tensor:
        return torch.as_tensor(list(v), dtype=x.dtype, device=x.device).view(shape)

    return (x * t(src[1]) + t(src[0]) - t(dst[0])) / t(dst[1])


@torch.no_grad()
def unit_cka(net: LocalNet, other: Optional[LocalNet],
             batches: Iterable[Tuple[torch.Tensor, object]], samples: int, *,
             stats: Tuple[Sequence[float], Sequence[float]],
             other_stats: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
             other_device: Optional[torch.device] = None, progress: bool = False) -> torch.Tensor:
    """Linear CKA [units of net, units of other] over the first ``samples`` examples,
    accumulated minibatch by minibatch (no features are kept); ``other=None`` compares
    ``net`` with itself. ``stats`` is the (mean, std) the batches were normalised with,
    ``other_stats`` what ``other`` was trained with."""
    nx = net.model.num_body_units
    ny = nx if other is None else other.model.num_body_units
    acc = MinibatchCKA(nx, ny)
    for x, _ in limited(batches, samples, "CKA", progress):
        if x.shape[0] < MIN_BATCH:  # the unbiased estimator needs 4 examples per batch
            continue
        xs = [h for _, h in unit_outputs(net, x)]
        if other is None:
            acc.update(xs)
            continue
        xo = _renormalise(x, stats, other_stats or stats)
        if other_device is not None:
            xo = xo.to(other_device)
        acc.update(xs, [h for _, h in unit_outputs(other, xo)])
    return acc.compute()


def matching_units(ends: Sequence[int], units_x: int, units_y: int) -> List[int]:
    """The unit of a ``units_y``-unit network at the depth of each unit in ``ends`` of a
    ``units_x``-unit one: the same index for one architecture, else the same relative
    depth."""
    if units_x == units_y:
        return list(ends)
    return [min(units_y - 1, max(0, round((e + 1) * units_y / units_x) - 1)) for e in ends]
