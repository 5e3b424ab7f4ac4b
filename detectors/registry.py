"""A small typed registry: built-ins as lazy "module:Class" strings, third parties through entry points.

Third-party packages add detectors with an entry point in the `trait_audit.detectors` group:

    [project.entry-points."trait_audit.detectors"]
    mydetector = "my_package.detector:MyDetector"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from auditor.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, group: str, base: type):
        self.group = group
        self.base = base
        self._targets: dict[str, str | type] = {}
        self._origins: dict[str, str] = {}
        self._plugins_loaded = False

    def register(self, name: str, target: str | type, origin: str = "built-in") -> None:
        if name in self._targets:
            raise UsageError(f"detector '{name}' is registered twice ({self._origins[name]} and {origin})")
        self._targets[name] = target
        self._origins[name] = origin

    def unregister(self, name: str) -> None:
        self._targets.pop(name, None)
        self._origins.pop(name, None)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            self.register(ep.name, ep.value, origin=f"entry point from {ep.dist.name if ep.dist else '?'}")

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._targets)

    def origin(self, name: str) -> str:
        return self._origins[name]

    def get(self, name: str) -> type[T]:
        self._load_plugins()
        if name not in self._targets:
            raise UsageError(f"unknown detector '{name}'; available: {', '.join(self.names())}")
        target = self._targets[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            try:
                target = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as err:
                raise UsageError(f"detector '{name}' ({self._origins[name]}) cannot be loaded: {err}") from None
        if not (isinstance(target, type) and issubclass(target, self.base)):
            raise UsageError(f"detector '{name}' is not a {self.base.__name__} subclass")
        if getattr(target, "name", None) != name:
            raise UsageError(f"detector registered as '{name}' calls itself '{getattr(target, 'name', None)}'")
        self._targets[name] = target
        return target


def _make_default():
    from detectors.base import Detector

    registry: Registry = Registry("trait_audit.detectors", Detector)
    registry.register("lexical", "detectors.lexical:LexicalDetector")
    registry.register("likelihood", "detectors.likelihood:LikelihoodDetector")
    registry.register("fingerprint", "detectors.fingerprint:FingerprintDetector")
    registry.register("gradient", "detectors.gradient:GradientDetector")
    registry.register("divergence", "detectors.divergence:DivergenceDetector")
    registry.register("judge", "detectors.judge:JudgeDetector")
    registry.register("probe", "detectors.probe:ProbeDetector")
    registry.register("persona", "detectors.persona:PersonaDetector")
    return registry


DETECTORS = _make_default()
