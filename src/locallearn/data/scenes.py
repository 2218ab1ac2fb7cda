"""fmnist-scenes: canvases of Fashion-MNIST items with exact masks and tight boxes.

One scene set serves semantic segmentation (issue 14) and detection (issue 16). A scene is a
1-channel uint8 ``size x size`` canvas (default 128) holding 1..``max_items`` items pasted at
random scales and places with little overlap, on mild clutter.

Conventions
-----------
- **Detection labels** ``labels`` are the Fashion-MNIST classes ``0..9`` (``num_classes = 10``).
- **Segmentation ids** in ``masks``: ``0`` = background, ``c + 1`` for an item of class ``c``
  (``1..10``; ``num_seg_classes = 11``). The ignore value 255 (``IGNORE_INDEX``) is never written.
- **An item's pixels** are those where the resized item's intensity exceeds ``MASK_THRESHOLD``
  (25 of 255). Items are painted in list order; a later item overwrites an earlier one where
  their masks meet (in the image and in the mask).
- **Boxes** are float32 ``[k, 4]`` XYXY in pixel-edge coordinates, tight around the object's
  *visible* mask pixels: ``x0`` = first column, ``x1`` = last column + 1 (likewise rows), so
  ``x1 - x0`` is the width in pixels and torchvision.transforms.v2 flips, crops and resizes
  them exactly like the mask. An item that ends up fully hidden is dropped.
- **item_ids** are the objects' indices into the item pool given to ``make_scenes``;
  ``clutter_ids`` those of the items the clutter fragments were cut from (same pool).

Generation (``make_scenes``)
----------------------------
Each scene draws ``k ~ U{1..max_items}`` items from the pool (uniform, with replacement; items
with fewer than ``MIN_ITEM_PIXELS`` mask pixels at native size are never drawn), a scale
``s ~ U(scale)`` each (``round(28 s)`` px square, bilinear resize with antialiasing) and, in paint
order, up to ``tries`` random positions: the first position whose tight box overlaps no earlier
placed box by more than ``max_overlap`` (intersection over the *smaller* box area, which bounds
the IoU too and also rules out containment) is taken; an item with no such position among its
tries is left out, so a scene may hold fewer than ``k`` objects, but never none: the first item
always fits (and every Fashion-MNIST item keeps mask pixels at scale 0.75). The clutter, so that segmentation is not thresholding: a smooth random background
(the sum of a row and a column profile, each linearly interpolated from 4 values ``U(0,
background / 2)``), up to ``clutter`` fragments per scene (6..14 px square crops of random pool
items, dimmed by ``U(0.5, 1)``, pasted under the items, the brighter pixel winning, and labelled
background). Items are composited over this: inside an item's mask its pixels replace the canvas
(the topmost item's, where masks meet), elsewhere in its square the brighter pixel wins (so its
dim, antialiased rim blends in). Last, uniform integer pixel noise in ``[-noise, noise)`` (std
about ``noise / 1.7``) over the whole canvas, items included. Pass ``clutter=0, noise=0,
background=0`` for clean scenes.

Defaults: 1..4 items at 0.75..2.5x (21..70 px), ``max_overlap=0.15``, ``tries=24``, ``clutter=3``,
``noise=12``, ``background=48``; on Fashion-MNIST that gives about 2.4 objects per scene, boxes
of about 36 x 38 px and 15% foreground pixels (``scenes_report.scene_stats``).

Everything is drawn from ``torch.Generator``s seeded from ``seed`` (never the global RNG), one per
chunk of ``CHUNK`` scenes, so ``make_scenes(..., n=100)`` are the first 100 scenes of
``make_scenes(..., n=10000)`` with the same seed. ``fmnist_scenes`` builds train scenes from the
train items and test scenes from the test items, with different derived seeds.

``python -m locallearn.data.scenes_report --n 1000 --png out.png`` prints statistics and draws 8 scenes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..nets.checks import as_int

NUM_CLASSES = 10
IGNORE_INDEX = 255  # the segmentation ignore value; never written by this generator
MASK_THRESHOLD = 25  # an item pixel belongs to the item when its (resized) intensity > this
MIN_ITEM_PIXELS = 16  # items with fewer mask pixels at native size are never drawn
CHUNK = 512  # scenes per generator; part of the data's definition (changing it changes the scenes)
CLUTTER_SIDES = (6, 14)  # fragment side range, inclusive
BG_GRID = 4  # the background's row and column profiles interpolate BG_GRID random values each
FMNIST_CLASSES: Tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass(eq=False)
class Scenes:
    """A generated scene set (see the module docstring for the conventions).

    ``images`` uint8 [N, 1, H, W]; ``masks`` uint8 [N, H, W] (0 = background, c+1 = class c);
    per scene ``boxes`` float32 [k, 4] XYXY, ``labels`` int64 [k] in 0..9, ``item_ids`` int64 [k],
    ``clutter_ids`` int64 [m]. ``sample(i)`` gives torchvision tv_tensors; indexing applies
    ``transforms`` (a v2 transform called as ``transforms(image, target)``) when set.
    """

    images: torch.Tensor
    masks: torch.Tensor
    boxes: List[torch.Tensor]
    labels: List[torch.Tensor]
    item_ids: List[torch.Tensor]
    clutter_ids: List[torch.Tensor] = field(default_factory=list)
    num_classes: int = NUM_CLASSES
    class_names: Tuple[str, ...] = FMNIST_CLASSES
    config: Dict[str, Any] = field(default_factory=dict)  # the generation parameters, for run configs
    transforms: Optional[Callable[..., Any]] = None

    ignore_index = IGNORE_INDEX

    @property
    def num_seg_classes(self) -> int:
        """Classes of the segmentation mask: background + the object classes."""
        return self.num_classes + 1

    @property
    def image_size(self) -> Tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        h, w = self.image_size
        k = sum(len(b) for b in self.boxes)
        return f"Scenes({len(self)} scenes of {h}x{w}, {k} objects, {self.num_classes} classes, config={self.config})"

    def sample(self, i: int) -> Tuple[Any, Dict[str, Any]]:
        """Scene ``i`` as ``(Image uint8 [1, H, W], {"mask": Mask int64 [H, W], "boxes":
        BoundingBoxes XYXY, "labels": int64 [k]})``, so v2 transforms move mask and boxes with it."""
        from torchvision import tv_tensors

        h, w = self.image_size
        target = {
            "mask": tv_tensors.Mask(self.masks[i].to(torch.int64)),
            "boxes": tv_tensors.BoundingBoxes(self.boxes[i].clone(), format="XYXY", canvas_size=(h, w)),
            "labels": self.labels[i].clone(),
        }
        return tv_tensors.Image(self.images[i].clone()), target

    def __getitem__(self, i: int) -> Tuple[Any, Dict[str, Any]]:
        image, target = self.sample(i)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed from ``seed`` and integer keys (any Python ints)."""
    entropy = [int(seed) & 0xFFFF_FFFF_FFFF_FFFF] + [int(k) & 0xFFFF_FFFF_FFFF_FFFF for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) >> 1


def _describe(t: Any) -> str:
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def _first_last(any_: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For bool [..., L]: index of the first True and last True + 1 (0, 0 where none)."""
    a = any_.to(torch.uint8)
    none = ~any_.any(-1)
    first = a.argmax(-1).masked_fill_(none, 0)
    last = (any_.shape[-1] - a.flip(-1).argmax(-1)).masked_fill_(none, 0)
    return first, last


def _tight(m: torch.Tensor) -> torch.Tensor:
    """Pixel-edge XYXY boxes [m, 4] (long) of bool masks [m, h, w]; zeros for an empty mask."""
    y0, y1 = _first_last(m.any(2))
    x0, x1 = _first_last(m.any(1))
    return torch.stack([x0, y0, x1, y1], 1)


def _chunk(pool: torch.Tensor, pool_y: torch.Tensor, eligible: torch.Tensor, g: torch.Generator, size: int,
           max_items: int, scale: Tuple[float, float], max_overlap: float, tries: int, clutter: int, noise: int,
           background: float, count: int) -> Dict[str, Any]:
    """The first ``count`` of the CHUNK scenes of one generator. The draws are made for the whole
    chunk whatever ``count`` (their order and shapes are fixed: do not reorder), so a scene never
    depends on how many are rendered; only the pixel noise, drawn last, is drawn for ``count``."""
    B, M, T, C = CHUNK, max_items, tries, clutter
    ph, pw = pool.shape[1:]
    # --- every random draw, up front
    k = torch.randint(1, M + 1, (B,), generator=g)
    src = eligible[torch.randint(len(eligible), (B, M), generator=g)]
    s = scale[0] + torch.rand(B, M, generator=g, dtype=torch.float64) * (scale[1] - scale[0])
    pos = torch.rand(B, M, T, 2, generator=g, dtype=torch.float64)
    n_clut = torch.randint(0, C + 1, (B,), generator=g)
    c_src = eligible[torch.randint(len(eligible), (B, C), generator=g)]
    c_side = torch.randint(CLUTTER_SIDES[0], CLUTTER_SIDES[1] + 1, (B, C), generator=g)
    c_off = torch.rand(B, C, 2, generator=g, dtype=torch.float64)
    c_pos = torch.rand(B, C, 2, generator=g, dtype=torch.float64)
    c_gain = 0.5 + 0.5 * torch.rand(B, C, generator=g)
    bg_grid = torch.rand(B, 2, BG_GRID, generator=g) * (background / 2)  # row and column profiles
    B = count
    k, src, s, pos, n_clut, c_src, c_side, c_off, c_pos, c_gain, bg_grid = (
        t[:B] for t in (k, src, s, pos, n_clut, c_src, c_side, c_off, c_pos, c_gain, bg_grid))
    noise_bytes = None
    if noise > 0:  # 8 random bytes per draw: uniform int8 values (a serial stream: its prefix is fixed)
        n8 = B * size * size
        noise_bytes = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n8 + 7) // 8,), generator=g, dtype=torch.int64)
        noise_bytes = noise_bytes.view(torch.int8)[:n8]

    # --- resize the wanted items, one interpolate per output size
    wanted = torch.arange(M)[None, :] < k[:, None]
    sh = torch.round(ph * s).long().clamp(min=1)
    sw = torch.round(pw * s).long().clamp(min=1)
    key = sh * 100_000 + sw
    groups = []  # (h, w, item ids b * M + slot, uint8 patches [n, h * w])
    local = torch.zeros(B * M, 4, dtype=torch.long)  # each resized item's tight box in its own square
    for kv in torch.unique(key[wanted]).tolist():
        item = (wanted & (key == kv)).reshape(-1).nonzero().squeeze(1)
        h, w = divmod(int(kv), 100_000)
        x = pool[src.reshape(-1)[item]].unsqueeze(1).float()
        if (h, w) != (ph, pw):
            x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        x = x.view(len(item), h, w).round_().clamp_(0, 255).to(torch.uint8)
        local[item] = _tight(x > MASK_THRESHOLD)
        groups.append((h, w, item, x.view(len(item), h * w)))
    local = local.view(B, M, 4)
    nonempty = local[..., 2] > local[..., 0]

    # --- placement: the first try whose box overlaps no placed box by more than max_overlap
    oy = torch.floor(pos[..., 0] * (size - sh + 1)[:, :, None].double()).long()  # [B, M, T]
    ox = torch.floor(pos[..., 1] * (size - sw + 1)[:, :, None].double()).long()
    cand = local[:, :, None, :] + torch.stack([ox, oy, ox, oy], -1)  # [B, M, T, 4]
    area = ((cand[..., 2] - cand[..., 0]) * (cand[..., 3] - cand[..., 1])).double()
    placed = torch.zeros(B, M, dtype=torch.bool)
    box = torch.zeros(B, M, 4, dtype=torch.long)
    box_area = torch.zeros(B, M, dtype=torch.float64)
    at = torch.zeros(B, M, 2, dtype=torch.long)  # the chosen (y, x)
    ar = torch.arange(B)
    for j in range(M):
        c = cand[:, j]  # [B, T, 4]
        if j == 0:
            ok = torch.ones(B, T, dtype=torch.bool)
        else:
            p = box[:, None, :j, :]  # [B, 1, j, 4]
            iw = (torch.minimum(c[:, :, None, 2], p[..., 2]) - torch.maximum(c[:, :, None, 0], p[..., 0])).clamp(min=0)
            ih = (torch.minimum(c[:, :, None, 3], p[..., 3]) - torch.maximum(c[:, :, None, 1], p[..., 1])).clamp(min=0)
            smaller = torch.minimum(area[:, j, :, None], box_area[:, None, :j]).clamp(min=1)
            bad = ((iw * ih).double() / smaller > max_overlap) & placed[:, None, :j]
            ok = ~bad.any(-1)
        t = ok.to(torch.uint8).argmax(1)  # the first acceptable try
        placed[:, j] = wanted[:, j] & nonempty[:, j] & ok.any(1)
        box[:, j] = torch.where(placed[:, j, None], c[ar, t], 0)
        box_area[:, j] = torch.where(placed[:, j], area[ar, j, t], 0)
        at[:, j, 0], at[:, j, 1] = oy[ar, j, t], ox[ar, j, t]

    # --- paint (uint8): background, clutter fragments (brighter pixel wins), then the items
    prof = F.interpolate(bg_grid, size=size, mode="linear", align_corners=False).round_().to(torch.uint8)
    canvas = (prof[:, 0, :, None] + prof[:, 1, None, :]).reshape(-1)  # flat [B * size * size]
    c_on = torch.arange(C)[None, :] < n_clut[:, None]
    for side in range(CLUTTER_SIDES[0], CLUTTER_SIDES[1] + 1):
        bj = (c_on & (c_side == side)).nonzero()
        if len(bj) == 0:
            continue
        b, j = bj[:, 0], bj[:, 1]
        fy = torch.floor(c_off[b, j, 0] * (ph - side + 1)).long()
        fx = torch.floor(c_off[b, j, 1] * (pw - side + 1)).long()
        fpos = (c_src[b, j] * ph + fy) * pw + fx
        frag = pool.reshape(-1)[fpos[:, None, None] + torch.arange(side)[:, None] * pw + torch.arange(side)]
        frag = (frag.float() * c_gain[b, j][:, None, None]).round_().to(torch.uint8)
        py = torch.floor(c_pos[b, j, 0] * (size - side + 1)).long()
        px = torch.floor(c_pos[b, j, 1] * (size - side + 1)).long()
        idx = ((b * size + py) * size + px)[:, None, None] + torch.arange(side)[:, None] * size + torch.arange(side)
        canvas.scatter_reduce_(0, idx.reshape(-1), frag.reshape(-1), "amax")  # order-free where they meet
    # Items, order-free: a pixel inside some item's mask takes the value (and class) of the topmost
    # (latest) such item; elsewhere the brightest of the canvas and the items' dim rims wins.
    item_code = (((torch.arange(M) + 1)[None, :] << 16) | ((pool_y[src] + 1) << 8)).reshape(-1).int()
    base = ((torch.arange(B)[:, None] * size + at[:, :, 0]) * size + at[:, :, 1]).reshape(-1)
    placed_flat = placed.reshape(-1)
    drawn = []  # (h, w, item ids, flat canvas positions [n, h * w], mask [n, h * w])
    for h, w, item, x in groups:
        ok = placed_flat[item]
        if not bool(ok.all()):
            item, x = item[ok], x[ok]
        if len(item) == 0:
            continue
        gidx = base[item][:, None] + (torch.arange(h)[:, None] * size + torch.arange(w)).reshape(1, -1)
        drawn.append((h, w, item, gidx, x, x > MASK_THRESHOLD))
    if not drawn:  # unreachable with a checked pool (every scene's first item is placed); keep cat safe
        drawn.append((1, 1, torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long),
                      torch.zeros(0, 1, dtype=torch.uint8), torch.zeros(0, 1, dtype=torch.bool)))
    gidx = torch.cat([d[3].reshape(-1) for d in drawn])
    val = torch.cat([d[4].reshape(-1) for d in drawn])
    m = torch.cat([d[5].reshape(-1) for d in drawn])
    code = torch.cat([(item_code[d[2]][:, None] | d[4]).reshape(-1) for d in drawn])
    rim = ~m
    canvas.scatter_reduce_(0, gidx[rim], val[rim], "amax")
    top = torch.zeros(B * size * size, dtype=torch.int32)
    mi = gidx[m]
    top.scatter_reduce_(0, mi, code[m], "amax")  # the topmost item, then (never needed) the brighter
    won = top[mi]  # every element at one pixel reads the same winner: the writes below agree
    canvas[mi] = (won & 255).to(torch.uint8)
    masks = torch.zeros(B * size * size, dtype=torch.uint8)
    masks[mi] = ((won >> 8) & 255).to(torch.uint8)
    if noise_bytes is not None:  # uniform integer noise in [-noise, noise)
        n16 = noise_bytes.to(torch.int16).mul_(noise).bitwise_right_shift_(7)
        canvas = n16.add_(canvas).clamp_(0, 255).to(torch.uint8)

    # --- tight boxes of the visible pixels (those where an item is the topmost)
    tight = torch.zeros(B * M, 4, dtype=torch.long)
    for h, w, item, gi, x, mk in drawn:
        vis = ((top[gi] >> 16) == (item % M + 1)[:, None]) & mk
        offset = torch.stack([base[item] % size, base[item] // size % size], 1).repeat(1, 2)
        tight[item] = _tight(vis.view(-1, h, w)) + offset
    keep = (tight[:, 2] > tight[:, 0]).view(B, M) & placed
    return {"images": canvas.view(B, 1, size, size), "masks": masks.view(B, size, size),
            "keep": keep, "boxes": tight.view(B, M, 4).float(), "labels": pool_y[src], "src": src,
            "c_src": c_src, "c_on": c_on}


def make_scenes(items_x: torch.Tensor, items_y: torch.Tensor, n: int, *, size: int = 128, max_items: int = 4,
                seed: int = 0, scale: Sequence[float] = (0.75, 2.5), max_overlap: float = 0.15, tries: int = 24,
                clutter: int = 3, noise: int = 12, background: float = 48.0,
                num_classes: int = NUM_CLASSES) -> Scenes:
    """``n`` scenes of items from the pool ``items_x`` (uint8 [N, h, w] or [N, 1, h, w]) with
    labels ``items_y`` (int64 [N] in 0..num_classes-1); see the module docstring."""
    if not isinstance(items_x, torch.Tensor) or items_x.dtype != torch.uint8 or items_x.dim() not in (3, 4) \
            or (items_x.dim() == 4 and items_x.shape[1] != 1) or len(items_x) == 0:
        raise ConfigError(f"items_x must be a non-empty uint8 tensor [N, h, w] or [N, 1, h, w] (got "
                          f"{_describe(items_x)})")
    if not isinstance(items_y, torch.Tensor) or items_y.dim() != 1 or len(items_y) != len(items_x) \
            or items_y.dtype.is_floating_point or items_y.dtype == torch.bool:
        raise ConfigError(f"items_y must be an integer tensor [{len(items_x)}] (got {_describe(items_y)})")
    n = as_int("n", n, 0)
    size = as_int("size", size, 8)
    max_items = as_int("max_items", max_items, 1)
    tries = as_int("tries", tries, 1)
    clutter = as_int("clutter", clutter, 0)
    num_classes = as_int("num_classes", num_classes, 1)
    if num_classes > 254:  # mask ids 1..num_classes must stay below the ignore value 255
        raise ConfigError(f"num_classes must be <= 254 (got {num_classes})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer (got {seed!r})")
    if max_items > 127:
        raise ConfigError(f"max_items must be <= 127 (got {max_items})")
    try:
        lo, hi = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise ConfigError(f"scale must be (min, max) (got {scale!r})") from None
    if not (0 < lo <= hi) or not math.isfinite(hi):
        raise ConfigError(f"scale must be (min, max) with 0 < min <= max (got {scale!r})")
    for name, v, top in (("max_overlap", max_overlap, math.inf), ("background", background, 255)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= top:
            raise ConfigError(f"{name} must be a number in [0, {top}] (got {v!r})")
    noise = as_int("noise", noise, 0)
    if noise > 127:
        raise ConfigError(f"noise must be an integer in 0..127 (got {noise})")
    pool = items_x.reshape(len(items_x), *items_x.shape[-2:])
    ph, pw = pool.shape[1:]
    if round(max(ph, pw) * hi) > size:
        raise ConfigError(f"an item of {ph}x{pw} at scale {hi} is {round(ph * hi)}x{round(pw * hi)} px and does "
                          f"not fit a {size}x{size} canvas; raise size or lower the scale")
    if min(ph, pw) < CLUTTER_SIDES[1] and clutter:
        raise ConfigError(f"clutter fragments are cut {CLUTTER_SIDES[1]} px wide: items of {ph}x{pw} are too "
                          "small (pass clutter=0)")
    y = items_y.to(torch.int64)
    bad = (y < 0) | (y >= num_classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ConfigError(f"items_y has label {int(y[i])} (item {i}); labels must be in 0..{num_classes - 1}")
    eligible = ((pool > MASK_THRESHOLD).flatten(1).sum(1) >= MIN_ITEM_PIXELS).nonzero().squeeze(1)
    if len(eligible) == 0:
        raise ConfigError(f"no item in the pool has {MIN_ITEM_PIXELS} pixels brighter than {MASK_THRESHOLD}")
    config = {"n": n, "size": size, "max_items": max_items, "seed": int(seed), "scale": (lo, hi),
              "max_overlap": float(max_overlap), "tries": tries, "clutter": clutter, "noise": noise,
              "background": float(background), "mask_threshold": MASK_THRESHOLD, "chunk": CHUNK}
    images, masks = torch.empty(n, 1, size, size, dtype=torch.uint8), torch.empty(n, size, size, dtype=torch.uint8)
    boxes: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    ids: List[torch.Tensor] = []
    cids: List[torch.Tensor] = []
    for c in range(math.ceil(n / CHUNK)):
        g = torch.Generator().manual_seed(derive_seed(seed, c))
        a, m = c * CHUNK, min(CHUNK, n - c * CHUNK)
        out = _chunk(pool, y, eligible, g, size, max_items, (lo, hi), float(max_overlap), tries, clutter,
                     noise, float(background), m)
        images[a:a + m], masks[a:a + m] = out["images"], out["masks"]
        keep = out["keep"]
        counts = keep.sum(1).tolist()
        boxes += list(torch.split(out["boxes"][keep], counts))
        labels += list(torch.split(out["labels"][keep], counts))
        ids += list(torch.split(out["src"][keep], counts))
        c_on = out["c_on"]
        cids += list(torch.split(out["c_src"][c_on], c_on.sum(1).tolist()))
    names = FMNIST_CLASSES if num_classes == NUM_CLASSES else tuple(str(i) for i in range(num_classes))
    return Scenes(images, masks, boxes, labels, ids, cids, num_classes=num_classes, class_names=names, config=config)


def fmnist_scenes(data_dir: Optional[str] = None, n_train: int = 10_000, n_test: int = 2_000, size: int = 128,
                  seed: int = 0, download: bool = False, **options: Any) -> Tuple[Scenes, Scenes]:
    """(train, test) fmnist-scenes: train scenes from the Fashion-MNIST train items only (seed
    ``derive_seed(seed, 0)``), test scenes from the test items only (``derive_seed(seed, 1)``).
    Fashion-MNIST is found like the ``fashion-mnist`` dataset (data_dir, $LOCALLEARN_DATA, the
    Debian package, the cache, a download only when ``download``); ``options`` go to make_scenes."""
    from .idx import load_fashion_mnist

    raw = load_fashion_mnist(None, data_dir, download, None, None)
    train = make_scenes(raw.train_x, raw.train_y, n_train, size=size, seed=derive_seed(seed, 0), **options)
    test = make_scenes(raw.test_x, raw.test_y, n_test, size=size, seed=derive_seed(seed, 1), **options)
    for sc, split in ((train, "train"), (test, "test")):
        sc.config.update({"dataset": "fmnist-scenes", "split": split, "base_seed": int(seed), "source": raw.source})
    return train, test
