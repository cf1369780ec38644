"""Activation functions by name, and plain NumPy versions with their derivatives for learners.

Names: ``sigmoid``, ``tanh``, ``relu``, ``leaky_relu`` (slope parameter, default 0.01),
``identity``, ``softmax`` (for the output layer, paired with the ``cross_entropy`` loss) and
``exp`` (positive outputs, paired with the ``poisson`` loss).
At exactly z = 0, relu's derivative is taken as 0 and leaky_relu's as its slope.
The math of training lives in the backends; the functions here are the NumPy reference's.
"""
from __future__ import annotations

from .kernels.base import ACTIVATIONS, Activation
from .kernels.numpy_backend import (exp, exp_prime, identity, identity_prime, leaky_relu, leaky_relu_prime, relu,
                                    relu_prime, sigmoid, sigmoid_prime, softmax, tanh, tanh_prime)


def get_activation(spec, argname="activation") -> Activation:
    """An Activation from a name (``"leaky_relu"``), an ``(name, slope)`` pair, or an Activation."""
    if isinstance(spec, Activation):
        act = spec
    elif isinstance(spec, str):
        act = Activation(spec)
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        act = Activation(spec[0], float(spec[1]))
    else:
        raise TypeError(f"{argname}: expected a name such as 'sigmoid', got {spec!r}")
    if act.name not in ACTIVATIONS:
        raise ValueError(f"{argname}: expected one of {', '.join(ACTIVATIONS)}, got {act.name!r}")
    if act.name == "leaky_relu" and not act.slope >= 0:
        raise ValueError(f"{argname}: leaky_relu slope must be >= 0, got {act.slope}")
    return act


__all__ = ["ACTIVATIONS", "Activation", "get_activation", "sigmoid", "sigmoid_prime", "tanh",
           "tanh_prime", "relu", "relu_prime", "leaky_relu", "leaky_relu_prime", "identity",
           "identity_prime", "softmax", "exp", "exp_prime"]
