"""Compute backends of fastbp, one module per backend, chosen by name through a registry.

``get_backend("numpy" | "numba" | "cupy" | "auto", dtype)`` returns a backend object. Modules are
imported only when their backend is asked for, so ``import fastbp`` stays fast.
"""
from __future__ import annotations

import importlib

from .base import ACTIVATIONS, LOSS_CLIP, LOSS_OUTPUTS, LOSSES, Activation, Backend, pairs_with

# name -> "module:class", relative to this package
REGISTRY = {
    "numpy": "numpy_backend:NumpyBackend",
    "numba": "numba_backend:NumbaBackend",
    "cupy": "cupy_backend:CupyBackend",
}
BACKENDS = tuple(REGISTRY) + ("auto",)


class BackendUnavailable(RuntimeError):
    """The backend exists but cannot run here (its library or its hardware is missing)."""


def backend_class(name: str):
    """The class registered under ``name``; raises BackendUnavailable when it cannot be imported."""
    if name not in REGISTRY:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    module, cls = REGISTRY[name].split(":")
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} is not available: {e}") from e
    return getattr(mod, cls)


def available(name: str) -> bool:
    """Whether backend ``name`` can run on this machine."""
    try:
        cls = backend_class(name)
    except BackendUnavailable:
        return False
    check = getattr(cls, "is_available", None)
    return bool(check()) if check else True


def resolve(name: str) -> str:
    """The concrete backend name for ``name`` ("auto": cupy with a GPU, else numba, else numpy)."""
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a name (str), got {type(name).__name__}")
    if name == "auto":
        for candidate in ("cupy", "numba"):
            if candidate in REGISTRY and available(candidate):
                return candidate
        return "numpy"
    if name not in REGISTRY:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name


def get_backend(name="auto", dtype="float32", **options) -> Backend:
    """A backend object: ``name`` is a registered name, "auto", or a Backend instance (returned
    as it is). ``options`` go to the backend's constructor (e.g. ``threads`` for numba)."""
    if isinstance(name, Backend):
        return name
    return backend_class(resolve(name))(dtype, **options)


__all__ = ["ACTIVATIONS", "LOSSES", "LOSS_CLIP", "LOSS_OUTPUTS", "pairs_with", "Activation", "Backend", "BackendUnavailable", "BACKENDS",
           "REGISTRY", "available", "backend_class", "get_backend", "resolve"]
