"""Compiled kernel of the numba backend for K >= 1 networks of one shape (a training plan with a
model axis, ``kernels/plan.py``): each member's epoch is the one-network fused epoch
(``train_epoch``) on its own row of the packed parameters, its own sample order and its own
hyperparameters. A worker thread runs a subset of the members, so workers never wait for each
other: no barrier per batch."""
from __future__ import annotations

from numba import njit

from ._nb_common import JIT
from ._nb_epoch import train_epoch
from ._nb_intrinsics import _load_acquire
from ._nb_sparse import train_sparse_1t


@njit(**JIT)
def train_members(ks, X, scale, Y, orders, bs, W, b, SW, Sb, woff, boff, sizes, lds, acts, slopes,
                  frozen_w, frozen_b, loss, opt, hp, mean, tiny, stop, totals):
    """One epoch of each member ``k`` in ``ks`` over ``X[orders[k]]``; its summed loss goes to
    ``totals[k]``. ``stop[0] != 0`` ends the work early (the caller discards it)."""
    for i in range(ks.shape[0]):
        if _load_acquire(stop, 0) != 0:
            return
        k = ks[i]
        totals[k] = train_epoch(X, scale, Y, orders[k], bs, W[k], b[k], SW[k], Sb[k], woff, boff, sizes, lds,
                                acts, slopes, frozen_w[k], frozen_b[k], loss, opt, hp[k], mean, tiny, stop)


@njit(**JIT)
def train_members_sparse(ks, indptr, indices, values, scale, Y, orders, bs, W, b, SW, Sb, woff, boff, sizes, lds,
                         acts, slopes, frozen_w, frozen_b, loss, opt, hp, mean, tiny, stop, totals):
    """As ``train_members``, each member by the sparse epoch (``_nb_sparse.train_sparse_1t``)."""
    for i in range(ks.shape[0]):
        if _load_acquire(stop, 0) != 0:
            return
        k = ks[i]
        totals[k] = train_sparse_1t(indptr, indices, values, scale, Y, orders[k], bs, W[k], b[k], SW[k], Sb[k],
                                    woff, boff, sizes, lds, acts, slopes, frozen_w[k], frozen_b[k], loss, opt,
                                    hp[k], mean, tiny, stop)
