"""The backend interface: what every compute backend provides.

A backend owns the arrays (allocation, transfer) and the math of training. Layers and the
network call only these methods, so a new backend is one new module with one class.

Conventions, for every backend:
- arrays are batch-major (one sample per row), C-contiguous, in ``backend.dtype``;
- a dense layer stores ``W`` with shape ``(n_in, n_out)`` and ``b`` with shape ``(n_out,)``,
  so that ``z = x @ W + b``;
- input data may stay uint8: ``gather(X, idx, scale)`` returns rows ``X[idx] * scale`` as floats;
- ``delta`` means dL/dz for each sample of the batch, not divided by the batch size;
  gradients returned by ``backward`` are sums over the batch, and the update step divides
  them by the batch size (``step = lr / m``), as in ``w -= eta/m * sum(grad)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# The activation and loss names, the pairings each loss accepts and the cross-entropy clip per
# dtype come from the one table of ops (kernels/ops.py), re-exported here where they always were.
from .ops import ACTIVATIONS, LOSS_CLIP, LOSS_OUTPUTS, LOSSES, pairs_with  # noqa: F401
from .ops import HP, OPTIMIZER_CODES


@dataclass(frozen=True)
class Activation:
    """An activation function by name, with its one parameter (the leaky-relu slope)."""

    name: str
    slope: float = 0.01

    def __str__(self) -> str:
        return f"leaky_relu({self.slope:g})" if self.name == "leaky_relu" else self.name


@dataclass(frozen=True)
class Engine:
    """A named way of running a fit's epochs: ``covers(plan)`` says whether it runs this plan
    (``plan`` None: the backend could make none, which only the per-batch loop runs)."""

    name: str
    covers: Callable

    def __repr__(self) -> str:
        return f"Engine({self.name!r})"


class Backend:
    """Base class of the compute backends. Subclasses implement every method below
    except ``train_epoch``/``warmup``, which are optional fast paths."""

    name = "base"

    def __init__(self, dtype="float32"):
        import numpy as np  # the dtype object only, not math

        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={self.dtype.name!r})"

    # --- arrays -------------------------------------------------------------------------
    def asarray(self, a, dtype=None):
        """``a`` as a C-contiguous array of this backend (``dtype`` defaults to the backend's)."""
        raise NotImplementedError

    def to_numpy(self, a):
        """A NumPy array holding ``a`` (no copy when it already is one)."""
        raise NotImplementedError

    def zeros(self, shape):
        raise NotImplementedError

    def prepare_data(self, X):
        """The training inputs as this backend keeps them for a whole ``fit`` (uint8 stays uint8)."""
        raise NotImplementedError

    def gather(self, X, idx, scale):
        """Rows ``X[idx]`` as floats of ``self.dtype``, multiplied by ``scale``."""
        raise NotImplementedError

    def index_array(self, order):
        """An epoch's sample order where ``gather`` reads indices fastest (moved once per epoch,
        sliced per batch)."""
        return order

    # --- layer math ---------------------------------------------------------------------
    def forward(self, x, W, b, activation: Activation):
        """Pre-activation and activation of a dense layer: ``(z, a)``."""
        raise NotImplementedError

    def activation_backward(self, g, z, a, activation: Activation):
        """dL/dz from ``g`` = dL/da (a vector-Jacobian product; softmax included)."""
        raise NotImplementedError

    def output_delta(self, z, a, y, activation: Activation, loss: str):
        """dL/dz at the output layer for each sample."""
        raise NotImplementedError

    def loss(self, a, y, loss: str) -> float:
        """The loss summed over the samples of the batch (a Python float)."""
        raise NotImplementedError

    def loss_sum(self, a, y, loss: str):
        """As ``loss``, but the value may stay on the device (a 0-d array) so that summing it over
        an epoch's batches needs no synchronisation; ``float()`` it once at the end."""
        return self.loss(a, y, loss)

    def weighted_loss_sum(self, a, y, loss: str, w):
        """The loss of each sample times its weight ``w`` (NumPy), summed (a Python float). The
        reference's per-sample losses on the host: weighted fits are the per-batch path."""
        import numpy as np

        from .numpy_backend import _loss_per_sample

        a, y = np.asarray(self.to_numpy(a), dtype=np.float64), np.asarray(self.to_numpy(y), dtype=np.float64)
        return float(np.dot(_loss_per_sample(a, y, loss), np.asarray(w, dtype=np.float64)))

    def scale_rows(self, a, w):
        """Row s of ``a`` times ``w[s]`` (``w`` NumPy), as a new array of this backend."""
        return a * self.asarray(w).reshape(-1, 1)

    def backward(self, x, W, delta, need_dx=True):
        """Gradients of a dense layer: ``(dW, db, dx)``, sums over the batch; ``dx`` = dL/dx
        (``None`` when not needed, e.g. for the first layer)."""
        raise NotImplementedError

    def update(self, p, g, state, opt, hp, scale, decayed):
        """One step of an optimiser on parameter ``p``, in place, from the summed gradient ``g`` of
        a batch: the rule sees ``scale * g`` (``scale`` = 1/m for mean gradients). ``opt``: the
        optimiser's code (``ops.OPTIMIZER_CODES``), ``hp``: its hyperparameter vector
        (``ops.HYPERPARAMETERS``), ``state``: its state arrays for ``p`` stacked on a first axis
        (shape ``(slots,) + p.shape``; None when it keeps none), changed in place; ``decayed``:
        whether weight decay applies (weights, not biases). The rule is written once per
        language: NumPy's here is the reference (``fastbp.optim`` documents the maths)."""
        raise NotImplementedError

    def _check_update(self, p, g, state, opt, hp):
        """The arguments of ``update`` as it trusts them: shapes agree, a state where one is needed."""
        if opt not in OPTIMIZER_CODES.values():
            raise ValueError(f"opt: expected an optimiser code among {sorted(OPTIMIZER_CODES.values())}, got {opt!r}")
        if len(hp) != len(HP):
            raise ValueError(f"hp: expected {len(HP)} hyperparameters ({', '.join(HP)}), got {len(hp)}")
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"g: expected shape {tuple(p.shape)} (the parameter's), got {tuple(g.shape)}")
        if opt == OPTIMIZER_CODES["adam"]:
            need, what = 3, "Adam needs m, v and a gradient buffer"
        elif hp[HP["momentum"]] > 0:
            need, what = (2, "Nesterov momentum needs a velocity and a gradient buffer") if hp[HP["nesterov"]] \
                else (1, "momentum needs a velocity")
        else:
            return
        if state is None or state.shape[0] < need or tuple(state.shape[1:]) != tuple(p.shape):
            got = None if state is None else tuple(state.shape)
            raise ValueError(f"state: {what}, of shape ({need},) + {tuple(p.shape)}; got {got}")

    def sgd_update(self, p, g, v, step, momentum=0.0, decay=0.0):
        """Plain SGD through ``update``, in place, with ``u = step * g + decay * p``: ``p -= u``,
        or with classical momentum ``v = momentum * v - u; p += v`` (``v`` may be ``None`` when
        ``momentum == 0``)."""
        if momentum and v is None:
            raise ValueError("v: momentum needs a velocity array, got None")
        hp = [0.0] * len(HP)
        hp[HP["lr"]], hp[HP["momentum"]], hp[HP["weight_decay"]] = 1.0, float(momentum), float(decay)
        if v is not None and tuple(v.shape) != tuple(p.shape):
            raise ValueError(f"v: expected shape {tuple(p.shape)} (the parameter's), got {tuple(v.shape)}")
        self.update(p, g, v[None] if momentum else None, OPTIMIZER_CODES["sgd"], hp, step, True)

    # --- optional fast paths ------------------------------------------------------------
    def train_epoch(self, layers, loss, X, scale, Y, order, batch_size, opt):
        """Run a whole epoch in one call and return the summed training loss, or ``None``
        when this configuration is not covered (the network then uses the kernels above)."""
        return None

    def warmup(self, layers, loss, X, Y, batch_size, opt):
        """Compile or load whatever ``train_epoch`` needs, so that timed epochs exclude it.
        Returns the seconds spent (0.0 when there is nothing to do)."""
        return 0.0

    # --- training plans: K >= 1 networks of one shape (kernels/plan.py), and the engines -------
    def engines(self):
        """This backend's engines, in order of preference, each with its ``covers(plan)``; the
        last, ``<name>-per-batch`` (the network's loop over the per-batch kernels above), covers
        everything. ``fused=False`` on a backend means: that engine only."""
        return (Engine(f"{self.name}-per-batch", lambda plan: True),)

    def engine(self, plan):
        """The name of the first engine that covers ``plan`` (None: the per-batch loop)."""
        return next(e.name for e in self.engines() if e.covers(plan))

    def make_plan(self, networks, loss, optimizers, X, Y, batch_size=None):
        """The training plan of ``networks`` (one list of layers per member) when one of this
        backend's compiled engines covers them, else None (each member then trains through the
        per-batch loop)."""
        return None

    def remake_plan(self, plan, networks, loss, optimizers, X, Y, batch_size=None):
        """``plan`` made again from the layers (a callback of the fit may have changed them),
        reusing what it made from the fit's data (which has not changed)."""
        return self.make_plan(networks, loss, optimizers, X, Y, batch_size)

    def train_plan(self, plan, X, scale, Y, orders, batch_size, members=None):
        """One epoch of the plan's members (member k over ``X[orders[k]]``); the summed loss
        per member."""
        raise NotImplementedError

    def warmup_plan(self, plan, X, Y, batch_size):
        """As ``warmup``, for a plan. Returns seconds."""
        return 0.0
