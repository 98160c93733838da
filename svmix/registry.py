"""Name -> class registries, so new encoders, backends, losses and teachers need no if/elif chains.

Usage::

    @ENCODERS.register("svmixer")
    class SVMixerEncoder(nn.Module): ...

    spec = ENCODERS.resolve({"name": "svmixer", "num_layers": 5}, key="model.encoder")
    encoder = ENCODERS.build(spec, hidden=1024, seq_len=149)

A registry knows which constructor arguments its caller passes itself (``provided``); every other
keyword argument is configuration. :meth:`Registry.resolve` fills the constructor's defaults into a
config section, so a saved config records every value a run used (a changed default never
silently changes what an old experiment means). An entry may define ``complete_config(params, key)``
to fill in values it derives from the others (the teacher frontend records its teacher's
architecture); resolving an already complete section must return it unchanged.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

from svmix.errors import SvmixError


def yaml_safe(value: Any) -> Any:
    """Tuples (as in constructor defaults) become lists, recursively, so a config dumps as plain YAML."""
    if isinstance(value, (tuple, list)):
        return [yaml_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: yaml_safe(v) for k, v in value.items()}
    return value


def constructor_defaults(obj: Callable[..., Any], exclude: Iterable[str] = ()) -> Dict[str, Any]:
    """Keyword parameters of ``obj``'s constructor (or signature) with their defaults; parameters
    without a default map to :data:`REQUIRED`. ``exclude`` names the ones the caller passes itself."""
    skip = set(exclude) | {"self"}
    out: Dict[str, Any] = {}
    for name, param in inspect.signature(obj).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        out[name] = REQUIRED if param.default is param.empty else yaml_safe(param.default)
    return out


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


def fill_defaults(spec: Mapping[str, Any], defaults: Mapping[str, Any], key: str, what: str) -> Dict[str, Any]:
    """``defaults`` (from :func:`constructor_defaults`) overridden by ``spec``; unknown or missing
    parameters are one-line errors naming ``key`` (the config section, e.g. ``model.encoder``)."""
    unknown = sorted(set(spec) - set(defaults))
    if unknown:
        known = f"known: {', '.join(sorted(defaults))}" if defaults else "it takes no parameters"
        raise SvmixError(f"{key}: unknown key '{unknown[0]}' for {what} ({known})")
    out = {**defaults, **yaml_safe(dict(spec))}
    missing = [name for name, value in out.items() if value is REQUIRED]
    if missing:
        raise SvmixError(f"{key}.{missing[0]}: {what} needs this parameter")
    return out


class Registry:
    def __init__(self, kind: str, provided: Sequence[str] = ()):
        self.kind = kind
        self.provided = tuple(provided)  # constructor arguments the caller passes (not configuration)
        self._entries: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str, key: Optional[str] = None) -> Callable[..., Any]:
        """The entry ``name``; ``key`` (the config key that named it) starts the error message."""
        if not isinstance(name, str) or name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            where = f"{key}: " if key else ""
            raise SvmixError(f"{where}unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]

    def defaults(self, name: str, key: Optional[str] = None) -> Dict[str, Any]:
        """The configurable parameters of entry ``name`` with their constructor defaults."""
        return constructor_defaults(self.get(name, key), exclude=self.provided)

    def resolve(self, spec: Mapping[str, Any], key: str) -> Dict[str, Any]:
        """``spec`` (a config section with a ``name``) with every constructor default filled in."""
        if not isinstance(spec, Mapping):
            raise SvmixError(f"{key}: expected a mapping with a 'name' key, got {spec!r}")
        spec = dict(spec)
        if "name" not in spec:
            raise SvmixError(f"{key}: needs a 'name' key; known: {', '.join(self.names())}")
        name = spec.pop("name")
        params = fill_defaults(spec, self.defaults(name, f"{key}.name"), key, f"{self.kind} '{name}'")
        complete = getattr(self.get(name), "complete_config", None)
        if complete is not None:  # values an entry derives from others (e.g. a teacher's architecture)
            params = complete(params, key)
        return {"name": name, **params}

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


FRONTENDS = Registry("frontend", provided=("hidden",))
ENCODERS = Registry("encoder", provided=("hidden", "seq_len"))
BACKENDS = Registry("backend", provided=("hidden", "num_states", "embed_dim"))
CLASSIFICATION_LOSSES = Registry("classification loss", provided=("embed_dim", "num_classes", "class_counts"))
KD_LOSSES = Registry("KD loss", provided=("student_hidden", "teacher_hidden", "num_targets"))
TEACHERS = Registry("teacher")
