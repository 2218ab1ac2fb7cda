"""Cut a backbone's body units into K contiguous blocks."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .errors import ConfigError

Range = Tuple[int, int]  # [start, end) unit indices


def split(num_units: int, k: int, boundaries: Optional[Sequence[int]] = None) -> List[Range]:
    """Return K contiguous ``[start, end)`` ranges covering ``num_units`` body units.

    By default each block gets ``num_units // k`` units and the remainder goes to the
    *last* blocks (early blocks work at full resolution and dominate memory, so they
    stay small). ``boundaries`` instead gives the K-1 unit indices where blocks 2..K
    start, e.g. ``[1, 6, 11]``. The task-head unit is not counted here: it always joins
    the last block (``LocalNet`` appends it).
    """
    if not isinstance(k, int) or isinstance(k, bool):
        raise ConfigError(f"blocks must be an integer, got {k!r}")
    if k < 1 or k > num_units:
        raise ConfigError(f"blocks K={k} is out of range: this model has {num_units} units, "
                          f"so K must be between 1 and {num_units}")
    if boundaries is not None:
        cuts = [int(b) for b in boundaries]
        if len(cuts) != k - 1:
            raise ConfigError(f"boundaries {list(boundaries)} must list K-1={k - 1} cut points")
        if any(b <= a for a, b in zip([0] + cuts, cuts + [num_units])):
            raise ConfigError(f"boundaries {list(boundaries)} must increase strictly within "
                              f"1..{num_units - 1}")
    else:
        base, extra = divmod(num_units, k)
        sizes = [base] * (k - extra) + [base + 1] * extra
        cuts, acc = [], 0
        for s in sizes[:-1]:
            acc += s
            cuts.append(acc)
    starts = [0] + cuts
    ends = cuts + [num_units]
    return list(zip(starts, ends))


def stage_starts(reductions: Sequence[int]) -> List[int]:
    """The body units where a new resolution stage starts (its reduction grows): the cut
    points of a split at every downsampling, the stem joining the first stage. For a
    torchvision ResNet that is [stem + layer1], [layer2], [layer3], [layer4]: the MAN++
    COCO code's K=4."""
    return [i for i in range(1, len(reductions)) if reductions[i] > reductions[i - 1]]


def stage_split(reductions: Sequence[int], k: int) -> List[Range]:
    """``split`` at the resolution stages; K must be the number of stages (or 1)."""
    cuts = stage_starts(reductions)
    if k == 1:
        return split(len(reductions), 1)
    if k != len(cuts) + 1:
        raise ConfigError(f"split 'stages' cuts this model at its {len(cuts) + 1} resolution "
                          f"stages (units {cuts}), so K must be {len(cuts) + 1}, got K={k}; "
                          "use --split equal or --boundaries for another K")
    return split(len(reductions), k, boundaries=cuts)


def balanced_split(costs: Sequence[float], k: int) -> List[Range]:
    """K contiguous ranges minimising the largest block's summed cost (e.g. memory).

    Exact dynamic programme over cut points, O(n^2 K); n is at most a few hundred units.
    """
    n = len(costs)
    split(n, k)  # same range checks and messages as the equal split
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[j][i]: minimal max-cost of splitting units[:i] into j blocks; cut[j][i]: last start
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for j in range(1, k + 1):
        for i in range(j, n - (k - j) + 1):
            for c in range(j - 1, i):
                v = max(best[j - 1][c], prefix[i] - prefix[c])
                if v < best[j][i]:
                    best[j][i], cut[j][i] = v, c
    bounds, i = [], n
    for j in range(k, 0, -1):
        bounds.append(cut[j][i])
        i = cut[j][i]
    starts = sorted(bounds)[1:]
    return split(n, k, boundaries=starts)
