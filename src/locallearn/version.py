"""The library version (one place: the package, configs and exports read it)."""
__version__ = "0.1.0"
