"""``locallearn.wrap``: any supported nn.Module -> LocalNet, keeping its parameters."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

from torch import nn

from .local_net import LocalNet, as_method
from .nets.adapters import to_unitnet
from .nets.checks import as_size


def wrap(model: nn.Module, blocks: Optional[int] = None, method: str = "infopro+manpp", *,
         image_size: Union[int, Tuple[int, int]] = 224, in_chans: Optional[int] = None,
         num_classes: Optional[int] = None, mean: Optional[Sequence[float]] = None,
         std: Optional[Sequence[float]] = None, **kwargs: Any) -> LocalNet:
    """Cut ``model`` into ``blocks`` gradient-isolated blocks trained by ``method``
    (default K: 4 for a local method, 1 for ``e2e``).

    The units share ``model``'s modules, so training the LocalNet trains ``model``
    itself: afterwards ``model`` (or ``net.model.export_state_dict()``) holds the
    weights in the original layout. ``image_size`` is the training input size (the
    units are sized by a dry run at it). Other keywords go to ``LocalNet``
    (``boundaries``, ``head_opts``, ``lb``, ``ema_momentum``, ``recompute``).
    An unsupported model raises ConfigError naming the adapters and how to add one;
    other bad arguments raise ConfigError (a ValueError) / ConfigTypeError (a
    TypeError) naming the argument.
    """
    spec = as_method(method)  # a bad method fails before the model's dry run
    size = as_size("image_size", image_size, allow_int=True)
    units = to_unitnet(model, size, in_chans, num_classes)
    if blocks is None:
        blocks = 1 if spec.is_e2e else 4
    return LocalNet(units, blocks, spec, image_size=size, mean=mean, std=std, **kwargs)
