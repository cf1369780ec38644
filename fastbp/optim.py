"""Optimisers. An optimiser holds its hyperparameters and owns its state: the arrays it keeps
per parameter (SGD's momentum velocity), made as zeros on first use. The update rule itself is
the backend's (``backend.update``), written once per language and shared by the fused and the
per-batch paths; what an optimiser hands to it is its code and one float64 vector of
hyperparameters laid out as ``ops.HYPERPARAMETERS``, so a new optimiser adds entries to the op
table, not arguments to every engine.

Each update uses the mean gradient g of the mini-batch, as in Nielsen's ``w -= eta/m * sum(grad)``
(``reduction="sum"``: the plain sum, as some textbook code does). Weight decay is L2
regularisation of the weights (not the biases), added to their gradient: ``g + weight_decay * w``,
so Nielsen's ``lmbda`` on a training set of n samples is ``weight_decay = lmbda / n`` and
scikit-learn's ``alpha`` on batches of m samples is ``weight_decay = alpha / m``.

- ``SGD``: ``w -= lr * g``; classical momentum ``v = momentum * v - lr * g; w += v``; Nesterov's
  (scikit-learn's form) ``v = momentum * v - lr * g; w += momentum * v - lr * g``.
- ``Adam`` (Kingma & Ba, with scikit-learn's bias correction): at update t (from 1)
  ``m = beta1 * m + (1 - beta1) * g``, ``v = beta2 * v + (1 - beta2) * g**2``,
  ``w -= lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + eps)``. (PyTorch's Adam puts
  eps after the bias correction of v; the two agree when eps is small against sqrt(v).)

``l2`` (an attribute of every optimiser, 0 by default) is an L2 penalty added to the batch's summed
gradient instead of its mean, scikit-learn's ``alpha``: its share of an update is l2 divided by the
batch's size (or total sample weight).

An optimiser counts its updates (``t``); an interrupted or diverging epoch puts the count back
with the state.
"""
from __future__ import annotations

import weakref

import numpy as np

from ._validation import check_nonneg_float, check_positive_float
from .kernels.ops import HP, HYPERPARAMETERS, OPTIMIZER_CODES


class Optimizer:
    """The base of fastbp's optimisers: the state per parameter, and what the engines take.

    ``state`` maps a layer to ``{parameter name: array}``, the array holding the optimiser's
    state slots for that parameter stacked along a first axis (shape ``(len(slots),) + p.shape``),
    on the layer's backend. Subclasses set ``kind`` (a name of ``ops.OPTIMIZER_TABLE``) and
    define ``slots`` and ``hyperparameters``."""

    kind = None

    def __init__(self):
        self._state = weakref.WeakKeyDictionary()  # layer -> {name: slots array}
        self._arrays = None  # state of ``step``'s user parameters: (shapes, [slots array])
        self.t = 0  # updates made (Adam's bias correction counts them)
        self.l2 = 0.0  # an L2 penalty on the summed gradient (scikit-learn's alpha; see the module doc)

    @property
    def code(self):
        return OPTIMIZER_CODES[self.kind]

    @property
    def slots(self):
        """Names of the state arrays kept per parameter (none: stateless)."""
        raise NotImplementedError

    def hyperparameters(self):
        """The float64 vector of ``ops.HYPERPARAMETERS`` the update rules read (``step``: ``t``)."""
        hp = np.zeros(len(HYPERPARAMETERS))
        for name, value in self._hyper().items():
            hp[HP[name]] = value
        hp[HP["step"]] = self.t
        hp[HP["l2"]] = self.l2
        return hp

    def _hyper(self):
        """``{name: value}`` of this optimiser's entries of the vector."""
        raise NotImplementedError

    def fresh(self):
        """A new optimiser with the same hyperparameters and no state."""
        raise NotImplementedError

    def reduce(self, batch_len):
        """The factor applied to a batch's summed gradient before the rule sees it."""
        return 1.0 / batch_len if self.reduction == "mean" else 1.0

    # --- state ------------------------------------------------------------------------------
    def state_of(self, layer, name, create=True):
        """The state array of parameter ``name`` of ``layer``, made as zeros on the layer's
        backend on first use (``create``); None for a stateless optimiser (or when not made
        yet and ``create`` is false). State made for another shape, dtype or kind of array (the
        parameters were replaced) is dropped: it cannot apply."""
        n = len(self.slots)
        if n == 0:
            return None
        p = getattr(layer, name)
        per_layer = self._state.setdefault(layer, {})
        s = per_layer.get(name)
        if s is not None and not (type(s) is type(p) and s.shape == (n,) + p.shape and s.dtype == p.dtype):
            s = per_layer[name] = None
        if s is None and create:
            s = per_layer[name] = layer.backend.zeros((n,) + p.shape)
        return s

    def layer_state(self, layer):
        """``{name: state array}`` of what has been made for ``layer`` (a view, not a copy)."""
        return {k: v for k, v in self._state.get(layer, {}).items() if v is not None}

    def snapshot(self, layers):
        """Copies of the state of ``layers``' parameters, and the update count:
        ``{"t": t, "layers": [{name: array}, ...]}``."""
        return {"t": self.t, "layers": [{k: v.copy() for k, v in self.layer_state(layer).items()} for layer in layers]}

    def restore(self, layers, snap):
        """Put back a ``snapshot``, in place (state made since is dropped)."""
        self.t = snap["t"]
        for layer, saved in zip(layers, snap["layers"]):
            per_layer = self._state.get(layer, {})
            for k in list(per_layer):
                if k in saved and per_layer[k] is not None and per_layer[k].shape == saved[k].shape:
                    per_layer[k][...] = saved[k]
                else:
                    del per_layer[k]

    def continue_from(self, other):
        """Take over ``other``'s state (a new optimiser of the same kind going on where the
        previous fit's stopped, as ``Network.fit`` does); returns self."""
        if isinstance(other, Optimizer) and other.kind == self.kind and other is not self:
            self._state = other._state
            self.t = other.t
        return self

    # --- updates ----------------------------------------------------------------------------
    def update(self, backend, layer, name, g, batch_len):
        """Update parameter ``name`` of ``layer`` in place from the summed gradient ``g`` of a
        batch of ``batch_len`` samples."""
        backend.update(getattr(layer, name), g, self.state_of(layer, name), self.code, self.hyperparameters(),
                       self.reduce(batch_len), name == "W")

    def step(self, params, grads, backend="numpy"):
        """Update arbitrary parameters in place from gradients a user computed (e.g. of a function
        to minimise): one step of the rule for each pair, weight decay included."""
        from .kernels import get_backend

        if len(params) != len(grads):
            raise ValueError(f"grads: expected {len(params)} gradients (one per parameter), got {len(grads)}")
        for i, (p, g) in enumerate(zip(params, grads)):
            if getattr(p, "shape", None) != getattr(g, "shape", None):
                raise ValueError(f"grads[{i}]: expected shape {getattr(p, 'shape', None)}, got "
                                 f"{getattr(g, 'shape', None)}")
        be = get_backend(backend, dtype=params[0].dtype) if isinstance(backend, str) else backend
        shapes = [(tuple(p.shape), p.dtype) for p in params]
        n = len(self.slots)
        if self._arrays is None or self._arrays[0] != (shapes, n):  # new parameters: fresh state
            self._arrays = ((shapes, n), [be.zeros((n,) + p.shape) if n else None for p in params])
        hp = self.hyperparameters()
        for p, g, s in zip(params, grads, self._arrays[1]):
            be.update(p, g, s, self.code, hp, 1.0, True)
        self.t += 1


class SGD(Optimizer):
    """Mini-batch stochastic gradient descent, with classical or Nesterov momentum and weight
    decay (see the module doc)."""

    kind = "sgd"

    def __init__(self, lr=0.1, momentum=0.0, weight_decay=0.0, reduction="mean", nesterov=False):
        super().__init__()
        self.lr = check_positive_float(lr, "lr")
        self.momentum = check_nonneg_float(momentum, "momentum", upper=1.0)
        self.weight_decay = check_nonneg_float(weight_decay, "weight_decay")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected True or False, got {nesterov!r}")
        self.reduction = reduction
        self.nesterov = bool(nesterov)

    def __repr__(self):
        return (f"SGD(lr={self.lr!r}, momentum={self.momentum!r}, weight_decay={self.weight_decay!r}, "
                f"reduction={self.reduction!r}, nesterov={self.nesterov!r})")

    @property
    def slots(self):
        if self.momentum <= 0:
            return ()
        return ("velocity", "gradient") if self.nesterov else ("velocity",)

    def _hyper(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": float(self.nesterov and self.momentum > 0)}

    def fresh(self):
        new = SGD(self.lr, self.momentum, self.weight_decay, self.reduction, self.nesterov)
        new.l2 = self.l2
        return new

    def step_size(self, batch_len: int) -> float:
        """The factor applied to summed gradients of a batch of ``batch_len`` samples."""
        return self.lr * self.reduce(batch_len)


class Adam(Optimizer):
    """Adam with scikit-learn's bias correction (see the module doc); ``weight_decay`` is L2
    added to the weights' gradient, as in scikit-learn (alpha) and PyTorch's Adam."""

    kind = "adam"
    reduction = "mean"

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__()
        self.lr = check_positive_float(lr, "lr")
        self.beta1 = check_nonneg_float(beta1, "beta1", upper=1.0)
        self.beta2 = check_nonneg_float(beta2, "beta2", upper=1.0)
        self.eps = check_positive_float(eps, "eps")
        self.weight_decay = check_nonneg_float(weight_decay, "weight_decay")

    def __repr__(self):
        return (f"Adam(lr={self.lr!r}, beta1={self.beta1!r}, beta2={self.beta2!r}, eps={self.eps!r}, "
                f"weight_decay={self.weight_decay!r})")

    slots = ("m", "v", "gradient")

    def _hyper(self):
        return {"lr": self.lr, "weight_decay": self.weight_decay, "beta1": self.beta1, "beta2": self.beta2,
                "eps": self.eps}

    def fresh(self):
        new = Adam(self.lr, self.beta1, self.beta2, self.eps, self.weight_decay)
        new.l2 = self.l2
        return new
