"""The optimisers' update rules for the numba backend, written once and shared by the fused
epochs (around the blocked weight gradient of ``_nb_blocked.update_layer_units``) and the
per-batch path (``update``). A rule is three parts around the batch gradient g:

    slot = gradient_slot(opt, hp)            # where g goes: -1 the parameter, s >= 0 state slot s
    c = begin(opt, hp, P, S, lo, hi, wd)     # prepares P[lo:hi] and its state; g's coefficient
    (P or S[slot])[lo:hi] += c * scale * g   # the caller adds the gradient
    finish(opt, hp, P, S, lo, hi, wd, k)     # completes the step (k: the batch's index in the epoch)

so a fused engine adds its gradient straight into the array the rule names (the weights for
plain SGD, the velocity under classical momentum, the gradient buffer for Adam and Nesterov's
momentum, whose rules need g itself) and never allocates; the caller picks the array itself (no
array is returned: each call site stays specialised, as LLVM compiles it best). ``P`` is a flat
parameter buffer, ``S`` its state (one row per slot of ``ops.OPTIMIZER_TABLE``, same length as P;
a 1 x 1 dummy when the optimiser keeps none), ``hp`` the float64 hyperparameter vector
(``ops.HYPERPARAMETERS``), ``wd`` the L2 coefficient of this update (``decay_of`` for weights, 0
for biases: a number, not a flag, so that each rule compiles once for both).

The maths (``fastbp/optim.py``; NumpyBackend.update is the reference): g the mean gradient plus
(weight_decay + l2 * scale) * p; SGD p -= lr*g; momentum v = mu*v - lr*g, p += v (Nesterov: p += mu*v - lr*g);
Adam at update t: m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g^2,
p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v) + eps).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types

from ._nb_common import (INLINE, HP_BETA1, HP_BETA2, HP_EPS, HP_L2, HP_LR, HP_MOMENTUM, HP_NESTEROV, HP_STEP,
                         FLUSH32, FLUSH64, HP_WEIGHT_DECAY, JIT, OPT_ADAM, separately)


@njit(**INLINE)
def _needs_gradient(opt, hp):
    return opt == OPT_ADAM or (hp[HP_MOMENTUM] > 0 and hp[HP_NESTEROV] > 0)


@njit(**INLINE)
def gradient_slot(opt, hp):
    """Which array the batch gradient is added into: -1 the parameter, s >= 0 state slot s."""
    if opt == OPT_ADAM:
        return 2
    if hp[HP_MOMENTUM] > 0:
        return 1 if hp[HP_NESTEROV] > 0 else 0
    return -1


@njit(**INLINE)
def decay_of(hp, scale):
    """The L2 coefficient of an update of weights: weight_decay + l2 * scale (biases: 0)."""
    return hp[HP_WEIGHT_DECAY] + hp[HP_L2] * scale


@separately(constants=("opt",), returns=types.float64)
def begin(opt, hp, P, S, lo, hi, wd):
    """The first part of a step of P[lo:hi]; returns the coefficient c of the gradient. (Each
    rule loops over slices from 0: an index that could be negative would keep LLVM from
    vectorising, for Numba wraps negative indices.)"""
    T = P.dtype.type
    if _needs_gradient(opt, hp):  # the gradient itself, into its buffer
        G = S[gradient_slot(opt, hp), lo:hi]
        for i in range(G.shape[0]):
            G[i] = T(0)
        return 1.0
    lr = hp[HP_LR]
    decay = lr * wd
    p = P[lo:hi]
    if hp[HP_MOMENTUM] > 0:  # (the velocities flushed here, once decayed: see finish)
        V = S[0, lo:hi]
        mu, d = T(hp[HP_MOMENTUM]), T(decay)
        tiny = T(FLUSH32 if P.itemsize == 4 else FLUSH64)
        for i in range(p.shape[0]):
            v = mu * V[i] - d * p[i]
            V[i] = v if abs(v) >= tiny else T(0)
    elif decay > 0:
        keep = T(1.0 - decay)
        for i in range(p.shape[0]):
            p[i] *= keep
    return -lr


@separately(constants=("opt",), returns=types.none)
def finish(opt, hp, P, S, lo, hi, wd, k):
    """The last part of the step begun by ``begin`` (the gradient has been added); ``k``: the
    index of this update after the optimiser's ``step`` count (0 for the first). In float32, the
    state (Adam's moments, the velocities) is flushed to zero below ``FLUSH32``: where the
    gradient stays zero it decays geometrically into subnormal floats, each operation on which
    is slow, while its effect on the step is below any rounding. Each value is flushed where it
    is computed (classical momentum's velocity in ``begin``, after its decay): flushing a value
    loaded and stored back unchanged becomes a masked store of the zeros, which AMD's Zen cores
    run in microcode (the momentum step 4x as slow, znver3)."""
    T = P.dtype.type
    wd = T(wd)
    p = P[lo:hi]
    tiny = T(FLUSH32 if P.itemsize == 4 else FLUSH64)
    if opt == OPT_ADAM:
        t = hp[HP_STEP] + k + 1
        b1, b2 = hp[HP_BETA1], hp[HP_BETA2]
        lr_t = T(hp[HP_LR] * np.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t))
        M, V, G = S[0, lo:hi], S[1, lo:hi], S[2, lo:hi]
        tb1, tb2, c1, c2, eps = T(b1), T(b2), T(1.0 - b1), T(1.0 - b2), T(hp[HP_EPS])
        for i in range(p.shape[0]):
            g = G[i] + wd * p[i]
            m = tb1 * M[i] + c1 * g
            v = tb2 * V[i] + c2 * (g * g)
            m = m if abs(m) >= tiny else T(0)
            v = v if v >= tiny else T(0)
            M[i] = m
            V[i] = v
            p[i] -= lr_t * m / (np.sqrt(v) + eps)
    elif hp[HP_MOMENTUM] > 0 and hp[HP_NESTEROV] > 0:
        V, G = S[0, lo:hi], S[1, lo:hi]
        lr, mu = T(hp[HP_LR]), T(hp[HP_MOMENTUM])
        for i in range(p.shape[0]):
            g = G[i] + wd * p[i]
            v = mu * V[i] - lr * g
            v = v if abs(v) >= tiny else T(0)
            V[i] = v
            p[i] += mu * v - lr * g
    elif hp[HP_MOMENTUM] > 0:  # (its velocities were flushed in begin, before the gradient)
        V = S[0, lo:hi]
        for i in range(p.shape[0]):
            p[i] += V[i]


@njit(**JIT)
def update(opt, hp, P, S, g, scale, decayed):
    """One whole step of flat P from the flat summed gradient g (the per-batch path)."""
    T = P.dtype.type
    n = P.shape[0]
    slot = gradient_slot(opt, hp)
    wd = decay_of(hp, scale) if decayed else 0.0
    cs = T(begin(opt, hp, P, S, 0, n, wd) * scale)
    if slot < 0:
        for i in range(n):
            P[i] += cs * g[i]
    else:
        G = S[slot]
        for i in range(n):
            G[i] += cs * g[i]
    finish(opt, hp, P, S, 0, n, wd, 0)


begin_at, finish_at = begin.at, finish.at  # (called by address: see separately)
