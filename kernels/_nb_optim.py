"""The optimisers' update rules for the numba backend, written once and shared by the fused
epochs (around the blocked weight gradient of ``_nb_blocked.update_layer_units``) and the
per-batch path (``update``). A rule is three parts around the batch gradient g:

    slot = gradient_slot(opt, hp)              # where g goes: -1 the parameter, s >= 0 state slot s
    c = begin(opt, hp, P, S, lo, hi, decayed)  # prepares P[lo:hi] and its state; g's coefficient
    (P or S[slot])[lo:hi] += c * scale * g     # the caller adds the gradient
    finish(opt, hp, P, S, lo, hi)              # completes the step

so a fused engine adds its gradient straight into the array the rule names (the weights for
plain SGD, the velocity under momentum) and never materialises g; the caller picks the array
itself (no array is returned: each call site stays specialised, as LLVM compiles it best). ``P``
is a flat parameter buffer, ``S`` its state (one row per slot of ``ops.OPTIMIZER_TABLE``, same
length as P; a 1 x 1 dummy when the optimiser keeps none), ``hp`` the float64 hyperparameter
vector (``ops.HYPERPARAMETERS``), ``decayed`` whether weight decay applies (weights, not biases).

SGD: u = lr*g + lr*wd*p; with momentum v = mu*v - u, p += v, else p -= u.
"""
from __future__ import annotations

from numba import njit

from ._nb_common import HP_LR, HP_MOMENTUM, HP_WEIGHT_DECAY, JIT


@njit(**JIT)
def gradient_slot(opt, hp):
    """Which array the batch gradient is added into: -1 the parameter, s >= 0 state slot s."""
    return 0 if hp[HP_MOMENTUM] > 0 else -1


@njit(**JIT)
def begin(opt, hp, P, S, lo, hi, decayed):
    """The first part of a step of P[lo:hi]; returns the coefficient c of the gradient."""
    T = P.dtype.type
    lr = hp[HP_LR]
    decay = lr * hp[HP_WEIGHT_DECAY] if decayed else 0.0
    if hp[HP_MOMENTUM] > 0:
        V = S[0]
        mu, d = T(hp[HP_MOMENTUM]), T(decay)
        for i in range(lo, hi):
            V[i] = mu * V[i] - d * P[i]
    elif decay > 0:
        keep = T(1.0 - decay)
        for i in range(lo, hi):
            P[i] *= keep
    return -lr


@njit(**JIT)
def finish(opt, hp, P, S, lo, hi):
    """The last part of the step begun by ``begin`` (the gradient has been added)."""
    if hp[HP_MOMENTUM] > 0:
        V = S[0]
        for i in range(lo, hi):
            P[i] += V[i]


@njit(**JIT)
def update(opt, hp, P, S, g, scale, decayed):
    """One whole step of flat P from the flat summed gradient g (the per-batch path)."""
    T = P.dtype.type
    n = P.shape[0]
    slot = gradient_slot(opt, hp)
    cs = T(begin(opt, hp, P, S, 0, n, decayed) * scale)
    if slot < 0:
        for i in range(n):
            P[i] += cs * g[i]
    else:
        G = S[slot]
        for i in range(n):
            G[i] += cs * g[i]
    finish(opt, hp, P, S, 0, n)
