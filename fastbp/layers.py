"""Layers. A layer holds its parameters as arrays of its network's backend and asks the backend
for all math; the only NumPy here is the random generator that draws initial weights."""
from __future__ import annotations

import numpy as np

from ._validation import check_finite_array, check_positive_int
from .activations import get_activation

INITS = ("normal", "scaled_normal", "xavier", "he")
PARAMS = ("W", "b")


def draw_weights(init, n_in, n_out, rng):
    """Initial weights of shape (n_in, n_out) as float64 NumPy:
    ``normal`` N(0, 1) (Nielsen's network.py), ``scaled_normal`` N(0, 1/n_in),
    ``xavier`` U(-r, r) with r = sqrt(6 / (n_in + n_out)), ``he`` N(0, 2/n_in)."""
    if init == "normal":
        return rng.standard_normal((n_in, n_out))
    if init == "scaled_normal":
        return rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)
    if init == "xavier":
        r = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-r, r, (n_in, n_out))
    if init == "he":
        return rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
    raise ValueError(f"init: expected one of {', '.join(INITS)} or an array, got {init!r}")


class Dense:
    """A fully connected layer ``a = f(x @ W + b)`` with ``W`` of shape (n_in, n_out).

    init: ``"normal"``, ``"scaled_normal"`` (default), ``"xavier"``, ``"he"``, or an array of
    shape (n_in, n_out). bias_init: ``"zeros"``, ``"normal"`` (N(0, 1)), a number, or an array of
    shape (n_out,); by default N(0, 1) with ``init="normal"`` (as in the book) and zeros otherwise.
    frozen: names of parameters kept fixed during training, e.g. ``("b",)``.
    """

    def __init__(self, n_in, n_out, activation="sigmoid", init="scaled_normal", bias_init=None,
                 frozen=()):
        self.n_in = check_positive_int(n_in, "n_in")
        self.n_out = check_positive_int(n_out, "n_out")
        self.activation = get_activation(activation)
        if isinstance(init, str):
            if init not in INITS:
                raise ValueError(f"init: expected one of {', '.join(INITS)} or an array, got {init!r}")
        else:
            init = check_finite_array(init, "init", shape=(self.n_in, self.n_out))
        if isinstance(bias_init, str):
            if bias_init not in ("zeros", "normal"):
                raise ValueError(f"bias_init: expected 'zeros', 'normal', a number or an array, got {bias_init!r}")
        elif bias_init is not None:
            shape = () if np.ndim(bias_init) == 0 else (self.n_out,)
            bias_init = check_finite_array(bias_init, "bias_init", shape=shape)
        self.init = init
        self.bias_init = bias_init
        frozen = (frozen,) if isinstance(frozen, str) else tuple(frozen)
        for name in frozen:
            if name not in PARAMS:
                raise ValueError(f"frozen: expected names among {PARAMS}, got {name!r}")
        self.frozen = frozenset(frozen)
        self.W = self.b = None  # made by build()
        self.backend = None

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out}, {str(self.activation)!r})"

    def build(self, backend, rng):
        """Draw the initial parameters (explicit arrays are copied) onto ``backend``."""
        W = draw_weights(self.init, self.n_in, self.n_out, rng) if isinstance(self.init, str) else self.init.copy()
        bias = self.bias_init  # checked in __init__
        if bias is None:
            bias = "normal" if isinstance(self.init, str) and self.init == "normal" else "zeros"
        if isinstance(bias, str):
            b = np.zeros(self.n_out) if bias == "zeros" else rng.standard_normal(self.n_out)
        else:
            b = np.array(np.broadcast_to(bias, (self.n_out,)))  # a copy: training must not change bias_init
        self.set_params(backend, W, b)

    def set_params(self, backend, W, b):
        """New values of W and b (copied to ``backend``). An optimiser's state for them (momentum
        velocities, owned by the optimiser) is kept when the backend's array type and the shapes are
        unchanged, so that setting parameters (a gradient check, a restored snapshot) does not
        silently restart momentum; otherwise the optimiser drops it (``Optimizer.state_of``)."""
        self.backend = backend
        self.W = backend.asarray(W)
        self.b = backend.asarray(b)

    def params(self):
        """``{"W": W, "b": b}`` as arrays of the backend."""
        return {"W": self.W, "b": self.b}

    def forward(self, x):
        return self.backend.forward(x, self.W, self.b, self.activation)
