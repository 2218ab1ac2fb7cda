"""locallearn: supervised local learning (DGL, InfoPro, PredSim, MAN, MAN++) for PyTorch."""
from .bank import FeatureBank
from .config import TrainConfig
from .errors import ConfigError
from .export import export_backbone, load_backbone
from .heads import HEADS, build_head
from .local_net import LocalNet
from .methods import MethodSpec, list_methods, parse_method
from .momentum import MomentumBridge
from .nets import UnitInfo, UnitNet, create_model, list_models
from .split import split
from .train import fit
from .wrap import wrap

from .version import __version__

__all__ = [
    "ConfigError", "FeatureBank", "HEADS", "LocalNet", "MethodSpec", "MomentumBridge",
    "TrainConfig", "UnitInfo", "UnitNet", "build_head", "create_model", "export_backbone",
    "fit", "list_methods", "list_models", "load_backbone", "parse_method", "split", "wrap",
]
