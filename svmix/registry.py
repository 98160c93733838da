"""Name -> class registries, so new encoders, backends, losses and teachers need no if/elif chains.

Usage::

    @ENCODERS.register("svmixer")
    class SVMixerEncoder(nn.Module): ...

    encoder = ENCODERS.build({"name": "svmixer", "num_layers": 5, ...}, hidden=1024)
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from svmix.errors import SvmixError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise SvmixError(f"unknown {self.kind} '{name}'; known: {known}")
        return self._entries[name]

    def build(self, spec: Mapping[str, Any], **extra: Any) -> Any:
        """Instantiate from a config mapping whose ``name`` key selects the entry."""
        spec = dict(spec)
        if "name" not in spec:
            raise SvmixError(f"{self.kind} config needs a 'name' key; known: {', '.join(self.names())}")
        cls = self.get(spec.pop("name"))
        return cls(**extra, **spec)

    def names(self):
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


ENCODERS = Registry("encoder")
BACKENDS = Registry("backend")
LOSSES = Registry("loss")
TEACHERS = Registry("teacher")
