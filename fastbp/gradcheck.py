"""Gradient checking: backprop's gradients against central finite differences."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class GradCheckResult:
    """``errors[i]`` = ``{"W": worst relative error, "b": ...}`` of layer i; ``worst`` over all."""

    errors: list = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max((e for layer in self.errors for e in layer.values()), default=0.0)

    def __str__(self):
        lines = ["layer  param  worst relative error"]
        for i, layer in enumerate(self.errors):
            lines += [f"{i:5d}  {name:5s}  {err:.3e}" for name, err in layer.items()]
        return "\n".join(lines)


def gradcheck(net, X, y, eps=1e-6, max_checks=None, seed=0):
    """Compare ``net.gradients(X, y)`` with central differences of ``net.evaluate(X, y)["loss"]``
    for every parameter (or ``max_checks`` randomly chosen entries per parameter) and return a
    GradCheckResult. The relative error of an entry is |a - n| / max(|a| + |n|, 1e-12).
    Use a float64 network: float32 differences are too coarse for a meaningful check.
    The network's parameters are left as they were."""
    rng = np.random.default_rng(seed)
    analytic = net.gradients(X, y)
    params = net.get_params()
    result = GradCheckResult()
    try:
        for i, layer_params in enumerate(params):
            errors = {}
            for name, value in layer_params.items():
                flat = value.reshape(-1)
                entries = np.arange(flat.size)
                if max_checks is not None and flat.size > max_checks:
                    entries = rng.choice(flat.size, max_checks, replace=False)
                worst = 0.0
                for j in entries:
                    old = flat[j]
                    losses = []
                    for shift in (eps, -eps):
                        flat[j] = old + shift
                        net.set_params(params)
                        losses.append(net.evaluate(X, y)["loss"])
                    flat[j] = old
                    numeric = (losses[0] - losses[1]) / (2 * eps)
                    a = analytic[i][name].reshape(-1)[j]
                    worst = max(worst, abs(a - numeric) / max(abs(a) + abs(numeric), 1e-12))
                errors[name] = float(worst)
            result.errors.append(errors)
    finally:
        net.set_params(params)
    return result
