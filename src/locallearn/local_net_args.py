"""Checks of LocalNet's arguments: the method spec, per-head options, the input normalisation
(one-line errors naming the bad value)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Optional, Sequence, Tuple, Union

from .errors import ConfigError, ConfigTypeError
from .methods import MethodSpec, list_methods, parse_method
from .nets.checks import as_floats, as_int


def check_overrides(overrides: Optional[Mapping[int, Mapping[str, object]]],
                     num_heads: int) -> Dict[int, Dict[str, object]]:
    """Per-head options ``{head index: {option: value}}`` (e.g. head 0 built differently,
    as in the reference InfoPro code); indices must name an existing head."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigTypeError(f"head_overrides must map a head index to options, got {overrides!r}")
    out: Dict[int, Dict[str, object]] = {}
    for key, opts in overrides.items():
        # JSON (config.json) keeps the indices as strings
        j = int(key) if isinstance(key, str) and key.strip().isdigit() else \
            as_int("head_overrides index", key)
        if not 0 <= j < num_heads:
            raise ConfigError(f"head_overrides names head {j}, but this network has "
                              f"{num_heads} local head(s): 0..{num_heads - 1}" if num_heads else
                              f"head_overrides names head {j}, but this network has no local head")
        if not isinstance(opts, Mapping):
            raise ConfigTypeError(f"head_overrides[{j}] must be a dict of head options, got {opts!r}")
        out[j] = dict(opts)
    return out


def as_method(method: Union[str, MethodSpec]) -> MethodSpec:
    """A method spec string (``"dgl+manpp"``) or MethodSpec as a MethodSpec."""
    if isinstance(method, MethodSpec):
        return method
    if not isinstance(method, str):
        raise ConfigTypeError(f"method must be a string such as 'dgl+manpp' or a MethodSpec, got "
                              f"{method!r} (choose from: {', '.join(list_methods())})")
    return parse_method(method)


def check_normalisation(mean: Optional[Sequence[float]], std: Optional[Sequence[float]],
                         in_chans: int) -> Tuple[Optional[Tuple[float, ...]],
                                                 Optional[Tuple[float, ...]]]:
    """The input normalisation heads use to map images back to [0, 1]: both or neither,
    one value per channel (or one for all), std > 0."""
    if (mean is None) != (std is None):
        raise ConfigError("mean and std go together: pass both (the normalisation of x) or "
                          "neither")
    if mean is None or std is None:
        return None, None
    m, s = as_floats("mean", mean), as_floats("std", std)
    for name, v in (("mean", m), ("std", s)):
        if len(v) not in (1, in_chans):
            raise ConfigError(f"{name} must have one value per input channel (in_chans="
                              f"{in_chans}) or a single value, got {len(v)}: {list(v)}")
    if min(s) <= 0:
        raise ConfigError(f"std must be positive, got {list(s)}")
    return m, s
