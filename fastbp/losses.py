"""Loss functions by name. Each is a per-sample value, averaged over the samples of a batch:

- ``quadratic``: 0.5 * sum_k (a_k - y_k)^2 (Nielsen's quadratic cost);
- ``mse``: mean_k (a_k - y_k)^2;
- ``binary_cross_entropy``: -sum_k [y_k log a_k + (1 - y_k) log(1 - a_k)] (sigmoid outputs);
- ``cross_entropy``: -sum_k y_k log a_k (softmax outputs).
"""
from __future__ import annotations

from .kernels.base import LOSSES


def check_loss(name, argname="loss") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{argname}: expected a name such as 'quadratic', got {name!r}")
    if name not in LOSSES:
        raise ValueError(f"{argname}: expected one of {', '.join(LOSSES)}, got {name!r}")
    return name


__all__ = ["LOSSES", "check_loss"]
