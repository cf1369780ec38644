"""The optimisers' update rules for the numba backend, written once and shared by the fused
epochs (around the blocked weight gradient of ``_nb_blocked.update_layer_units``) and the
per-batch path (``update``). A rule is two halves around the batch gradient g:

    target, c = begin(opt, hp, P, S, lo, hi, decayed)   # prepares P[lo:hi] and its state
    target[lo:hi] += c * scale * g                        # the caller adds the gradient
    finish(opt, hp, P, S, lo, hi)                         # completes the step

so a fused engine adds its gradient straight into the array the rule names (the weights for
plain SGD, the velocity under momentum) and never materialises g. ``P`` is a flat parameter
buffer, ``S`` its state (one row per slot of ``ops.OPTIMIZER_TABLE``, same length as P; a
1 x 1 dummy when the optimiser keeps none), ``hp`` the float64 hyperparameter vector
(``ops.HYPERPARAMETERS``), ``decayed`` whether weight decay applies (weights, not biases).

SGD: u = lr*g + lr*wd*p; with momentum v = mu*v - u, p += v, else p -= u.
"""
from __future__ import annotations

from numba import njit

from ._nb_common import HP_LR, HP_MOMENTUM, HP_WEIGHT_DECAY, JIT


@njit(**JIT)
def begin(opt, hp, P, S, lo, hi, decayed):
    """The first half of a step of P[lo:hi]: returns (target, c), the array the caller adds
    ``c * scale * g`` into, and the coefficient."""
    T = P.dtype.type
    lr = hp[HP_LR]
    decay = lr * hp[HP_WEIGHT_DECAY] if decayed else 0.0
    if hp[HP_MOMENTUM] > 0:
        V = S[0]
        mu, d = T(hp[HP_MOMENTUM]), T(decay)
        for i in range(lo, hi):
            V[i] = mu * V[i] - d * P[i]
        return V, -lr
    if decay > 0:
        keep = T(1.0 - decay)
        for i in range(lo, hi):
            P[i] *= keep
    return P, -lr


@njit(**JIT)
def finish(opt, hp, P, S, lo, hi):
    """The second half of the step begun by ``begin`` (the gradient has been added)."""
    if hp[HP_MOMENTUM] > 0:
        V = S[0]
        for i in range(lo, hi):
            P[i] += V[i]


@njit(**JIT)
def update(opt, hp, P, S, g, scale, decayed):
    """One whole step of flat P from the flat summed gradient g (the per-batch path)."""
    T = P.dtype.type
    target, c = begin(opt, hp, P, S, 0, P.shape[0], decayed)
    cs = T(c * scale)
    for i in range(P.shape[0]):
        target[i] += cs * g[i]
    finish(opt, hp, P, S, 0, P.shape[0])
