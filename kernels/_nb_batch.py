"""The per-batch kernels of the numba backend's generic path (``Network.train_batch``,
``gradients``, inference): the activations, their backward pass, the output deltas with the
summed loss (the optimisers' update of a flat parameter is ``_nb_optim.update``). The matrix products around them are
NumPy's (BLAS, held to one thread on large batches: ``numba_backend.one_blas_thread``)."""
from __future__ import annotations

import numpy as np
from numba import njit

from ._nb_common import JIT, SOFTMAX
from ._nb_math import activate_rows, dact, output_delta_row


@njit(**JIT, _nrt=False)
def activate(z, a, code, slope):
    """a = f(z), into the caller's array. It allocates nothing, so it is compiled without
    reference counting (whose helpers a new network's first prediction would otherwise compile)."""
    activate_rows(z, a, z.shape[0], 0, z.shape[1], code, slope)


@njit(**JIT)
def activation_backward(g, z, a, code, slope):
    out = np.empty_like(g)
    for s in range(g.shape[0]):
        if code == SOFTMAX:
            dot = g[s, 0] - g[s, 0]
            for k in range(g.shape[1]):
                dot += g[s, k] * a[s, k]
            for k in range(g.shape[1]):
                out[s, k] = a[s, k] * (g[s, k] - dot)
        else:
            for k in range(g.shape[1]):
                out[s, k] = g[s, k] * dact(z[s, k], a[s, k], code, slope)
    return out


@njit(**JIT)
def output_delta(z, a, y, code, slope, loss):
    """(delta, summed loss) of a batch (no flushing: the per-batch path matches NumPy closely)."""
    d = np.empty_like(a)
    total = 0.0
    for s in range(a.shape[0]):
        total += output_delta_row(z[s], a[s], y[s], d[s], a.shape[1], code, slope, loss, a[0, 0] - a[0, 0])
    return d, total
