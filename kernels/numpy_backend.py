"""The NumPy reference backend: the specification every other backend is tested against.

Kept short and plain on purpose: one matrix product per layer per batch, names from the maths.
"""
from __future__ import annotations

import numpy as np

from .base import LOSS_CLIP, Activation, Backend
from .ops import HP, OPTIMIZER_CODES, cancels
from .sparse import is_sparse


def _clip(a):
    """The cross-entropy losses' clip for ``a``'s dtype (see ``base.LOSS_CLIP``)."""
    return LOSS_CLIP.get(a.dtype.name, LOSS_CLIP["float64"])


# --- activations and their derivatives (plain functions, also exported by fastbp) ---------
def sigmoid(z):
    """1 / (1 + exp(-z)), computed without overflow for large |z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.result_type(z, np.float32))


def sigmoid_prime(z):
    s = sigmoid(z)
    return s * (1 - s)


def tanh(z):
    return np.tanh(z)


def tanh_prime(z):
    return 1 - np.tanh(z) ** 2


def relu(z):
    return np.maximum(z, 0)


def relu_prime(z):
    """1 where z > 0, else 0 (the derivative at exactly 0 is taken as 0)."""
    return (z > 0).astype(np.result_type(z, np.float32))


def leaky_relu(z, slope=0.01):
    return np.where(z > 0, z, slope * z)


def leaky_relu_prime(z, slope=0.01):
    """1 where z > 0, else ``slope`` (at exactly 0 the derivative is taken as ``slope``)."""
    return np.where(z > 0, 1.0, slope).astype(np.result_type(z, np.float32))


def identity(z):
    return z


def identity_prime(z):
    return np.ones_like(z)


def exp(z):
    return np.exp(z)


def exp_prime(z):
    return np.exp(z)


def softmax(z):
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _activate(z, act: Activation):
    if act.name == "leaky_relu":
        return leaky_relu(z, act.slope)
    return _FUNCTIONS[act.name](z)


_FUNCTIONS = {"sigmoid": sigmoid, "tanh": tanh, "relu": relu, "identity": identity, "softmax": softmax, "exp": exp}


def _derivative_from(z, a, act: Activation):
    """f'(z), using the activation a = f(z) where that is cheaper."""
    if act.name == "sigmoid":
        return a * (1 - a)
    if act.name == "tanh":
        return 1 - a * a
    if act.name == "relu":
        return (z > 0).astype(z.dtype)
    if act.name == "leaky_relu":
        return np.where(z > 0, 1, act.slope).astype(z.dtype)
    if act.name == "identity":
        return np.ones_like(z)
    if act.name == "exp":
        return a
    raise ValueError(f"no elementwise derivative for {act.name!r}")


# --- losses: per-sample value and dL/da --------------------------------------------------
def _loss_per_sample(a, y, loss):
    if loss == "quadratic":
        return 0.5 * np.sum((a - y) ** 2, axis=1)
    if loss == "mse":
        return np.mean((a - y) ** 2, axis=1)
    if loss == "binary_cross_entropy":
        c = _clip(a)
        a = np.clip(a, c, 1 - c)
        return -np.sum(y * np.log(a) + (1 - y) * np.log(1 - a), axis=1)
    if loss == "cross_entropy":
        return -np.sum(y * np.log(np.maximum(a, _clip(a))), axis=1)
    if loss == "poisson":
        c = np.maximum(a, _clip(a))
        with np.errstate(divide="ignore", invalid="ignore"):
            ylog = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / c), 0)
        return np.sum(ylog - y + c, axis=1)
    raise ValueError(f"unknown loss {loss!r}")


def _loss_grad(a, y, loss):
    if loss == "quadratic":
        return a - y
    if loss == "mse":
        return 2 * (a - y) / a.shape[1]
    if loss == "binary_cross_entropy":
        c = _clip(a)
        a = np.clip(a, c, 1 - c)
        return (a - y) / (a * (1 - a))
    if loss == "cross_entropy":
        return -y / np.maximum(a, _clip(a))
    if loss == "poisson":
        return 1 - y / np.maximum(a, _clip(a))
    raise ValueError(f"unknown loss {loss!r}")


def _consecutive(idx):
    """Whether the index array ``idx`` is i, i+1, ..., j (nonempty)."""
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
        return False
    return int(idx[-1]) - int(idx[0]) == idx.size - 1 and bool(np.all(np.diff(idx) == 1))


class NumpyBackend(Backend):
    """Reference implementation on NumPy arrays."""

    name = "numpy"

    def asarray(self, a, dtype=None):
        if type(a).__module__.startswith("cupy"):
            raise TypeError("got a CuPy array on the 'numpy' backend; pass a NumPy array "
                            "(cupy.asnumpy(a)) or use backend='cupy'")
        return np.ascontiguousarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_numpy(self, a):
        return np.asarray(a)

    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def prepare_data(self, X):
        if type(X).__module__.startswith("cupy"):
            raise TypeError("got a CuPy array on the 'numpy' backend; pass a NumPy array")
        if is_sparse(X):  # kept sparse (CSR): batches are gathered as sparse rows
            X = X.tocsr()
            return X if X.dtype in (np.uint8, self.dtype) else X.astype(self.dtype)
        return X if X.dtype == np.uint8 else self.asarray(X)

    def gather(self, X, idx, scale):
        if _consecutive(idx) and isinstance(X, np.ndarray) and X.flags.c_contiguous:
            # rows i..j (predict, evaluate, unshuffled batches): a view, converted (a copy) only
            # when the dtype or the scale asks for it
            i0 = int(idx[0])
            x = X[i0:i0 + len(idx)]
            y = x.astype(self.dtype, copy=False)
            if scale != 1:
                y = y * self.dtype.type(scale) if y is x else np.multiply(y, self.dtype.type(scale), out=y)
            return y
        x = X[idx].astype(self.dtype)  # scipy.sparse rows stay sparse: forward and backward take them
        if scale != 1:
            x = x * self.dtype.type(scale) if is_sparse(x) else np.multiply(x, self.dtype.type(scale), out=x)
        return x

    def forward(self, x, W, b, activation):
        z = np.asarray(x @ W) + b  # (x may be a batch of scipy.sparse rows)
        return z, _activate(z, activation)

    def activation_backward(self, g, z, a, activation):
        if activation.name == "softmax":
            return a * (g - np.sum(g * a, axis=1, keepdims=True))
        return g * _derivative_from(z, a, activation)

    def output_delta(self, z, a, y, activation, loss):
        if cancels(activation.name, loss):
            return a - y  # the derivative of the activation cancels
        return self.activation_backward(_loss_grad(a, y, loss), z, a, activation)

    def loss(self, a, y, loss):
        return float(np.sum(_loss_per_sample(a, y, loss)))

    def backward(self, x, W, delta, need_dx=True):
        dW = np.asarray(x.T @ delta)
        db = delta.sum(axis=0)
        dx = delta @ W.T if need_dx else None
        return dW, db, dx

    def update(self, p, g, state, opt, hp, scale, decayed):
        self._check_update(p, g, state, opt, hp)
        lr, mu, wd, nesterov, b1, b2, eps, step, l2 = (float(hp[HP[name]]) for name in (
            "lr", "momentum", "weight_decay", "nesterov", "beta1", "beta2", "eps", "step", "l2"))
        g = float(scale) * g  # the mean (or summed) gradient
        decay = wd + l2 * float(scale)  # L2 on the weights: on the mean, and on the sum
        if decayed and decay:
            g = g + decay * p
        if opt == OPTIMIZER_CODES["adam"]:
            t = step + 1  # this update's number
            m, v = state[0], state[1]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= (lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)) * m / (np.sqrt(v) + eps)
        elif mu > 0:  # SGD with momentum: classical, or Nesterov's (scikit-learn's form)
            v = state[0]
            v *= mu
            v -= lr * g
            p += mu * v - lr * g if nesterov else v
        else:
            p -= lr * g
