"""A tiny name -> builder registry; names are CLI names and test ids."""
from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

from .errors import choice_error

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps unique names to builders. A duplicate name raises."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Return the builder, or raise ConfigError listing the valid names."""
        try:
            return self._items[name]
        except KeyError:
            raise choice_error(self.kind, name, self.names()) from None

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
