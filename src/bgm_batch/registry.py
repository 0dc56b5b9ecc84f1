"""A small name -> factory registry shared by the text and audio backends.

Backends live one per module inside a backend package (``bgm_batch.text``,
``bgm_batch.audio``) and register themselves with a decorator. The registry imports every
module of its package the first time a name is looked up, so adding a backend touches one
file. Backend modules must import heavy libraries (torch, transformers) lazily, inside the
factory, so that listing backends stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownBackendError(KeyError):
    """Raised for a backend name nobody registered; the message lists the known names."""


class Registry(Generic[T]):
    """Maps backend names to factories ``factory(settings) -> backend``."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self._package = package
        self._factories: dict[str, Callable[..., T]] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@TEXT_BACKENDS.register("hf")`` on a factory or class."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} backend {name!r} registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def _discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self._package}.{module.name}")
        self._discovered = True

    def names(self) -> list[str]:
        """Every registered backend name, sorted."""
        self._discover()
        return sorted(self._factories)

    def create(self, name: str, *args: object, **kwargs: object) -> T:
        """Build the backend called ``name``; a clear error lists the known names."""
        self._discover()
        try:
            factory = self._factories[name]
        except KeyError:
            known = ", ".join(self.names())
            raise UnknownBackendError(
                f"unknown {self.kind} backend {name!r}; known: {known}"
            ) from None
        return factory(*args, **kwargs)
