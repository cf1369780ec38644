"""Stochastic gradient descent, the one optimiser of fastbp.

Each update uses the mean gradient of the mini-batch, as in Nielsen's ``w -= eta/m * sum(grad)``
(``reduction="sum"`` uses the plain sum instead, as some textbook code does). Weight decay is
L2 regularisation of the weights (not the biases): ``w -= lr * weight_decay * w`` each update,
so Nielsen's ``lmbda`` on a training set of n samples is ``weight_decay = lmbda / n``.
Momentum is classical: ``v = momentum * v - lr * grad; w += v``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._validation import check_nonneg_float, check_positive_float


@dataclass
class SGD:
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    reduction: str = "mean"

    def __post_init__(self):
        self.lr = check_positive_float(self.lr, "lr")
        self.momentum = check_nonneg_float(self.momentum, "momentum", upper=1.0)
        self.weight_decay = check_nonneg_float(self.weight_decay, "weight_decay")
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: expected 'mean' or 'sum', got {self.reduction!r}")
        self._velocity = None
        self._velocity_shapes = None

    def step_size(self, batch_len: int) -> float:
        """The factor applied to summed gradients of a batch of ``batch_len`` samples."""
        return self.lr / batch_len if self.reduction == "mean" else self.lr

    def update(self, backend, p, g, velocity, batch_len, decay=True):
        """One update of parameter ``p`` from the summed gradient ``g`` of a batch, in place."""
        backend.sgd_update(p, g, velocity, self.step_size(batch_len), self.momentum,
                           self.lr * self.weight_decay if decay else 0.0)

    def step(self, params, grads, backend="numpy"):
        """Update arbitrary parameters in place from gradients a user computed (e.g. of a function
        to minimise): ``p -= lr * g`` for each pair (with momentum and decay as configured)."""
        from .kernels import get_backend

        if len(params) != len(grads):
            raise ValueError(f"grads: expected {len(params)} gradients (one per parameter), got {len(grads)}")
        for i, (p, g) in enumerate(zip(params, grads)):
            if getattr(p, "shape", None) != getattr(g, "shape", None):
                raise ValueError(f"grads[{i}]: expected shape {getattr(p, 'shape', None)}, got "
                                 f"{getattr(g, 'shape', None)}")
        be = get_backend(backend, dtype=params[0].dtype) if isinstance(backend, str) else backend
        shapes = [(tuple(p.shape), p.dtype) for p in params]
        if self._velocity is None or self._velocity_shapes != shapes:  # new parameters: fresh velocities
            self._velocity = [be.zeros(p.shape) if self.momentum else None for p in params]
            self._velocity_shapes = shapes
        for p, g, v in zip(params, grads, self._velocity):
            self.update(be, p, g, v, 1)
