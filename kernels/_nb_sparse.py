"""The fused epoch with a sparse first layer (``train_epoch_sparse``, one worker of one or two):
the first layer's forward product and weight gradient run over each sample's nonzero inputs only
(``kernels/sparse.py``'s rows: indices and values per sample, made once per fit), the layers above
by the two-thread dense epoch's kernel (``_nb_epoch.layers_above``), the optimiser's rule of
``_nb_optim.py`` around them.

Layout: the first layer's weights INPUT-MAJOR (row i holds the weights from input i to every
unit, padded to 128 bytes), so that each nonzero input is one contiguous multiply-add over the
units (``_rows_dot``), and the update adds into the rows of the batch's nonzeros only
(``_rows_axpy``). The layers above keep the dense epoch's transposed layout (plan.py).

Two workers split the first layer by INPUTS: worker t owns the weight rows of inputs [0, split)
(t = 0) or [split, n_in) (t = 1), ``split`` chosen per fit so that each holds half the nonzeros.
Per batch: both compute their partial forward sums for every sample; barrier; each takes half of
the batch's samples through the rest (adds up the partial sums and the bias, the layers above,
the output deltas, the deltas back to the first layer); barrier; worker 0 updates the layers above
and the first layer's biases, and each worker its own rows of the first layer's weights (and
their optimiser state: whole flat ranges, so the rules of ``_nb_optim.py`` apply as they are).
Between barriers no array is written by one worker and read or written by the other.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._nb_blocked import gemm_pays_nb, update_layer_units_at
from ._nb_common import INLINE, JIT
from ._nb_epoch import (AHEAD, SLOT_BEGIN, SLOT_FINISH, SLOT_UPDATE, _barrier, gather_targets, layers_above,
                        prefetch_lines, prefetch_targets)
from ._nb_intrinsics import _load_acquire, _prefetch, _rows_axpy, _rows_dot, min2
from ._nb_optim import begin_at, decay_of, finish_at, gradient_slot
from .sparse import SparseRows, index_dtype, is_sparse, values_dtype


@njit(**INLINE)
def prefetch_sample(indptr, indices, values, r):
    """Start loading sample r's nonzeros (indices and values) into the cache."""
    p0, p1 = indptr[r], indptr[r + 1]
    if p1 > p0:
        prefetch_lines(indices, p0, p1)
        prefetch_lines(values, p0, p1)


@njit(**INLINE)
def _lower_bound(indices, p0, p1, v):
    """The first p in p0:p1 with indices[p] >= v (p1 if none); indices[p0:p1] sorted. (Not
    np.searchsorted: its implementation's module makes a cached kernel import scipy.linalg when it
    loads, 0.4 s.)"""
    lo, hi = p0, p1
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**JIT)
def _count_nonzeros(X, counts):
    """counts[r] = the nonzeros of row r of a dense 2-D array."""
    for r in range(X.shape[0]):
        row = X[r]
        c = 0
        for i in range(row.shape[0]):
            c += row[i] != 0
        counts[r] = c


@njit(**JIT)
def _collect_nonzeros(X, chunks, width, indptr, indices, values):
    """Row r's nonzeros into indices/values[indptr[r]:indptr[r + 1]], in order. ``chunks[r, w]``
    is zero when entries [w * width, (w + 1) * width) of row r all are (then they are skipped;
    uint8 rows: their 8-byte words, of which about 60% are zero on MNIST); else the entries are
    collected without a branch per entry: every one is written and the position moves on past
    nonzeros only (so both arrays hold one slot more than the nonzeros, for trailing zeros)."""
    for r in range(X.shape[0]):
        row = X[r]
        c = chunks[r]
        p = indptr[r]
        for w in range(c.shape[0]):
            if c[w] != 0:
                for i in range(w * width, (w + 1) * width):
                    v = row[i]
                    indices[p] = i
                    values[p] = v
                    p += v != 0


def sparse_rows(X, dtype):
    """``SparseRows.of(X, dtype)`` (the nonzero rows a sparse fit trains on, made once per fit),
    collected by compiled loops from a dense array: the same arrays, 3-6x as fast as NumPy's
    ``nonzero`` (MNIST's 10,000 test digits 19 ms against 65-98 ms; Fashion-MNIST's 60,000 images
    0.11-0.16 s against 0.7 s; znver3, 2026-12-02), and uint8 rows of whole 8-byte words skip
    their zero words (8,000 MNIST digits 10.8 -> 4.6 ms, znver3, 2026-12-03)."""
    if is_sparse(X) or np.asarray(X).ndim != 2:
        return SparseRows.of(X, dtype)
    X = np.ascontiguousarray(X)
    n, d = X.shape
    counts = np.empty(n, np.int64)
    _count_nonzeros(X, counts)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = np.empty(nnz + 1, index_dtype(d))
    values = np.empty(nnz + 1, values_dtype(X, dtype))
    if X.dtype == np.uint8 and d % 8 == 0 and X.ctypes.data % 8 == 0:
        chunks, width = X.view(np.uint64), 8  # the rows' 8-byte words
    else:
        chunks, width = np.ones((n, 1), np.uint64), d  # each row one chunk, never skipped
    _collect_nonzeros(X, chunks, width, indptr, indices, values)
    return SparseRows(indptr, indices[:nnz], values[:nnz], d)


@njit(**JIT, _nrt=False)  # (it allocates nothing: no reference counting of its views)
def train_epoch_sparse(t, nw, indptr, indices, values, split, scale, Y, order, bs, W, b, SW, Sb, woff, boff,
                       sizes, lds, acts, slopes, frozen_w, frozen_b, loss, opt, hp, mean, tiny, fns, Z, A, D, P,
                       spans, Yb, flags, losses, stop):
    """Worker t of nw (1 or 2) of one epoch over the samples ``order`` (see the module doc).
    ``Z``, ``A``, ``D`` (L x bs x width) and ``P`` (nw x bs x lds[1]: each worker's partial
    first-layer sums) are shared by the workers; ``spans`` (nw x 2 x bs, int64: where each
    sample's nonzeros of this worker's inputs begin and end) and ``Yb`` (nw x bs x width: the
    batch's targets) are each worker's own. Worker t's summed loss goes to ``losses[t]``.
    ``stop[0] != 0`` ends the epoch early (polled before each batch and in the barriers)."""
    T = W.dtype.type
    n = order.shape[0]
    H = sizes[1]
    ld = lds[1]  # the input-major rows' length: the first layer's units, padded
    lanes = 128 // W.itemsize
    chunks = ld // lanes  # (the rows' 128-byte pieces; a range stepping by lanes divided by it per sample)
    w0 = woff[0]
    rlo, rhi = (0, sizes[0]) if nw == 1 else ((0, split) if t == 0 else (split, sizes[0]))
    lo_p, hi_p = spans[t, 0], spans[t, 1]  # this worker's nonzeros of each sample of the batch
    yb = Yb[t]
    zs0 = T(scale)
    slot = gradient_slot(opt, hp)
    G = W if slot < 0 else SW[slot]  # where the first layer's weight gradient goes
    total = 0.0
    nb = (n + bs - 1) // bs
    for k in range(nb):
        if _load_acquire(stop, 0) != 0:
            return
        start = k * bs
        m = min2(bs, n - start)
        red = 1.0 / m if mean else 1.0
        for s in range(m):  # this worker's share of the first layer's forward sums
            if start + s + 2 * AHEAD < n:  # (the offsets of the sample whose nonzeros come next)
                _prefetch(indptr, order[start + s + 2 * AHEAD])
            if start + s + AHEAD < n:
                prefetch_sample(indptr, indices, values, order[start + s + AHEAD])
            r = order[start + s]
            p0, p1 = indptr[r], indptr[r + 1]
            if nw > 1:
                q = _lower_bound(indices, p0, p1, split)
                p0, p1 = (p0, q) if t == 0 else (q, p1)
            lo_p[s], hi_p[s] = p0, p1
            for c in range(chunks):
                _rows_dot(W, indices, values, p0, p1, w0 + c * lanes, ld, P[t, s], c * lanes)
        if nw > 1 and not _barrier(flags, t, 2 * k + 1, stop):
            return
        # this worker's samples s0:s1 through the layers above and back to the first layer's deltas
        half = m // 2
        s0, s1 = (0, m) if nw == 1 else ((0, half) if t == 0 else (half, m))
        ms = s1 - s0
        if ms > 0:
            gather_targets(Y, order, start, m, s0, s1, yb)
            prefetch_targets(Y, order, start + m, s0, min2(s1, n - start - m))
            b0 = b[boff[0]:boff[0] + ld]  # (zero-padded: the sums' padding stays zero, the loop one vector pass)
            for s in range(s0, s1):
                z = Z[0, s]
                for j in range(ld):
                    v = P[0, s, j]
                    if nw > 1:
                        v += P[1, s, j]
                    z[j] = v * zs0 + b0[j]
            total += layers_above(fns, Z, A, D, yb, m, s0, s1, True, False, W, b, SW, Sb, woff, boff, sizes, lds,
                                  acts, slopes, frozen_w, frozen_b, loss, opt, hp, red, k, tiny)
        if nw > 1 and not _barrier(flags, t, 2 * k + 2, stop):
            return
        if t == 0:  # the layers above and the first layer's biases, from every sample's deltas
            layers_above(fns, Z, A, D, yb, m, 0, m, False, True, W, b, SW, Sb, woff, boff, sizes, lds, acts, slopes,
                         frozen_w, frozen_b, loss, opt, hp, red, k, tiny)
            # the rule's bias part only (the weights come next); gemm as the rule says, not a literal
            # False: a literal argument would compile this call's whole tree once more
            update_layer_units_at(fns, SLOT_UPDATE, A[0], m, ld, W, SW, w0, b, Sb, boff[0], D[0], 0, H, 1.0, opt, hp,
                                  red, k, True, frozen_b[0], gemm_pays_nb(bs, H, W.itemsize))
        if not frozen_w[0]:  # this worker's rows of the first layer's weights
            lo_i, hi_i = w0 + rlo * ld, w0 + rhi * ld
            wd = decay_of(hp, red)
            cs = T(begin_at(fns, SLOT_BEGIN, opt, hp, W, SW, lo_i, hi_i, wd) * red * scale)
            for s in range(m):
                for c in range(chunks):
                    _rows_axpy(G, indices, values, lo_p[s], hi_p[s], w0 + c * lanes, ld, cs, D[0, s], c * lanes)
            finish_at(fns, SLOT_FINISH, opt, hp, W, SW, lo_i, hi_i, wd, k)
    losses[t] = total
