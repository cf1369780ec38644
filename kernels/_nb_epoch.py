"""The fused epochs of the numba backend, one compiled call per epoch: ``train_epoch`` (one
thread, any depth) and ``train_epoch_2t`` (two workers, two or more layers, synchronised by
``_barrier``; its worker 0 runs the layers above the first through ``layers_above``, the kernel the
sparse epoch shares), with the gathering of each batch's rows by the shuffled order into buffers
aligned to 128 bytes (uint8 converted on the fly). The caller allocates every buffer, so the
epochs are compiled without reference counting (each view of an array they allocated was an
atomic increment and decrement). The next batch's input rows are prefetched into L2
while the current batch computes. The parameters are in the layout of ``_nb_blocked.py``.
"""
from __future__ import annotations

from numba import njit, types

from ._nb_blocked import backprop_units_at, forward_units, gemm_pays_nb, update_layer_units_at
from ._nb_common import INLINE, JIT, for_kernels, separately
from ._nb_intrinsics import _cpu_relax, _load_acquire, _prefetch, _rows, _sched_yield, _store_release, max2, min2
from ._nb_math import activate_full_at, output_deltas_at

SPINS = 2000  # polls of the barrier before yielding the CPU
# The kernels a fused epoch calls by address (``fns[slot]``, see ``_nb_common.separately``), each
# compiled for the codes of the configuration being trained (``slot_codes``): the epochs are
# compiled once per dtype and engine, whatever the activations, loss and optimiser.
SLOTS = ("hidden layers' activation", "output activation", "output deltas", "a layer's update",
         "optimiser step begins", "optimiser step ends", "deltas of a hidden layer")
SLOT_HIDDEN, SLOT_OUT, SLOT_DELTAS, SLOT_UPDATE, SLOT_BEGIN, SLOT_FINISH, SLOT_BACK = (i for i, _ in enumerate(SLOTS))
N_SLOTS = len(SLOTS)


def slot_codes(slot, acts, loss, opt):
    """The codes slot ``slot``'s kernel is compiled for (name -> code): the hidden layers'
    activation (when they share one; otherwise none, and the kernel reads each layer's code) for
    their activation and their deltas, the output layer's, the output deltas' (activation and
    loss), the optimiser's. None: the slot is never called (a network without hidden layers has
    no hidden activation or deltas), no kernel is made for it and its address is 0."""
    if slot == SLOT_HIDDEN or slot == SLOT_BACK:
        hidden = {int(a) for a in acts[:-1]}
        if not hidden:
            return None
        return {"code": hidden.pop()} if len(hidden) == 1 else {}
    if slot == SLOT_OUT:
        return {"code": int(acts[-1])}
    if slot == SLOT_DELTAS:
        return {"act": int(acts[-1]), "loss": int(loss)}
    return {"opt": int(opt)}
AHEAD = 16  # rows prefetched ahead of the one being gathered


# --- batches: gather, prefetch -----------------------------------------------------------------
@separately(returns=types.none)
def gather_rows(X, order, start, m, lo, hi, xb):
    """xb[s, :n_in] = X[order[start + s], :] as floats (uint8 stays unscaled), lo <= s < min(hi, m).
    Row s + AHEAD is prefetched while row s is converted: in large batches, where the rows
    prefetched during the previous batch (``prefetch_rows``, at most AHEAD) run out."""
    T = xb.dtype.type
    n_in = X.shape[1]
    end = min2(hi, m)
    for s in range(lo, end):
        if s + AHEAD < end:
            prefetch_row(X, order[start + s + AHEAD])
        r = X[order[start + s]]
        o = xb[s]
        for i in range(n_in):
            o[i] = T(r[i])


@njit(**INLINE)
def prefetch_lines(a, lo, hi):
    """Ask the CPU to start loading a[lo:hi] (1-D, lo < hi) into the cache, every line of it. (A
    while loop: a range with a step divides by the step, a run-time value to LLVM.)"""
    i, step = lo, max2(1, 64 // a.itemsize)
    while i < hi:
        _prefetch(a, i)
        i += step
    _prefetch(a, hi - 1)  # a[lo:hi] need not start on a cache line: the last line may be one more


@njit(**INLINE)
def prefetch_row(X, k):
    """Ask the CPU to start loading row X[k] into the cache (every line of it)."""
    prefetch_lines(X[k], 0, X.shape[1])


@separately(returns=types.none)
def prefetch_rows(X, order, start, lo, hi):
    """Prefetch rows X[order[start + s]] for lo <= s < min(hi, lo + AHEAD) (the start of the next
    batch, while this one computes; ``gather_rows`` prefetches the rest as it goes). More at once
    would only queue behind each other and evict the working set."""
    for s in range(lo, min2(hi, lo + AHEAD)):
        prefetch_row(X, order[start + s])


# The targets' rows (a few values each): the same two loops, inlined into the epochs, where a call
# would compile one more version of gather_rows and prefetch_rows for Y's type.
gather_targets = njit(**INLINE)(gather_rows.separate.fn)
prefetch_targets = njit(**INLINE)(prefetch_rows.separate.fn)



# --- the fused epoch, one thread, any depth ------------------------------------------------------
@njit(**INLINE)
def activate_layer(fns, Z, A, m, n, l, L, acts, slope):
    """``activate_full`` of layer l of L, the output layer's kernel or the hidden layers' (by
    address: ``SLOTS``)."""
    if l == L - 1:
        activate_full_at(fns, SLOT_OUT, Z, A, m, n, acts[l], slope)
    else:
        activate_full_at(fns, SLOT_HIDDEN, Z, A, m, n, acts[l], slope)


@separately()  # (no declared return type: compiled while its caller is typed)
def layers_above(fns, Z, A, D, yb, m, s0, s1, through, update, W, b, SW, Sb, woff, boff, sizes, lds, acts, slopes,
                 frozen_w, frozen_b, loss, opt, hp, red, k, tiny):
    """The two-thread and sparse epochs' work on a batch above the first layer's sums, one kernel
    for both (compiled once per dtype: the second of them a user meets loads it). Compiled while
    the epoch that calls it is typed, so that its calls by address are typed then too: a first
    compile's helper process starts on them (``compile_ahead``; handed to the helper itself, it
    made a first two-thread fit 1.14x as long).
    ``through``: samples s0:s1 of the batch of m, from their first-layer sums Z[0] (the
    caller's), through each layer's activation, the layers above forward, the output deltas
    against ``yb`` and the deltas of each layer below the output, down to D[0]; returns their
    summed loss (else 0). ``update``: then the optimiser's step of each layer above the first,
    from all m samples' deltas (each layer's deltas below were computed with its weights before
    their step). ``k``: the batch's index in the epoch; ``red``: 1/m for mean gradients, else 1.
    Z, A, D: L x bs x width. (The one-thread epoch has these loops inline: inlined into it by
    Numba, this kernel made the default first compile 1.12x as long; called, 0.5-1 s longer.)"""
    T = W.dtype.type
    L = acts.shape[0]
    bs = Z.shape[1]
    total = 0.0
    if through:
        ms = s1 - s0
        for l in range(L):
            z = _rows(Z[l], s0, s1)
            if l > 0:
                bias = _rows(b, boff[l], boff[l] + sizes[l + 1])
                forward_units(_rows(A[l - 1], s0, s1), ms, lds[l], W, woff[l], bias, 0, sizes[l + 1], T(1), z,
                              gemm_pays_nb(bs, sizes[l + 1], W.itemsize))
            activate_layer(fns, z, _rows(A[l], s0, s1), ms, sizes[l + 1], l, L, acts, T(slopes[l]))
        out = L - 1
        total = output_deltas_at(fns, SLOT_DELTAS, _rows(Z[out], s0, s1), _rows(A[out], s0, s1), _rows(yb, s0, s1),
                                 _rows(D[out], s0, s1), ms, sizes[L], acts[out], T(slopes[out]), loss, T(tiny))
        for l in range(L - 1, 0, -1):  # over the padded width: zero weights there give zero deltas
            backprop_units_at(fns, SLOT_BACK, _rows(D[l], s0, s1), ms, sizes[l + 1], W, woff[l], lds[l], 0, lds[l],
                              _rows(Z[l - 1], s0, s1), _rows(A[l - 1], s0, s1), _rows(D[l - 1], s0, s1), acts[l - 1],
                              T(slopes[l - 1]), T(tiny))
    if update:
        for l in range(L - 1, 0, -1):
            update_layer_units_at(fns, SLOT_UPDATE, A[l - 1], m, lds[l], W, SW, woff[l], b, Sb, boff[l], D[l], 0,
                                  sizes[l + 1], 1.0, opt, hp, red, k, frozen_w[l], frozen_b[l],
                                  gemm_pays_nb(bs, sizes[l + 1], W.itemsize))
    return total


@njit(**JIT, _nrt=False)  # (it allocates nothing: no reference counting of its views)
def train_epoch(X, scale, Y, order, bs, W, b, SW, Sb, woff, boff, sizes, lds, acts, slopes,
                frozen_w, frozen_b, loss, opt, hp, mean, tiny, fns, xb, yb, Z, A, D, stop):
    """One epoch of mini-batch training over X[order]. W holds every layer's weights transposed
    (layer l: rows of stride lds[l] from woff[l], zero-padded), b the biases (from boff[l]);
    both are modified in place, with the optimiser's state SW/Sb (``opt``, hyperparameters
    ``hp``: see ``_nb_optim.py``). ``fns``: the addresses of the activation, output-delta and
    update kernels compiled for this configuration's codes (``SLOTS``).
    Returns the summed loss of the epoch (float64). ``stop[0] != 0`` (set by another thread,
    polled before each batch) ends the epoch early: the caller then discards W, b, SW and Sb.
    The caller's buffers (zeros, 128-byte aligned rows): ``xb`` (bs x lds[0]) the batch's inputs,
    ``yb`` (bs x width) its targets, padded like the rows of A (see output_delta_flat), ``Z``,
    ``A``, ``D`` (L x bs x width, width the widest of lds[1:]) each layer's sums, activations and
    deltas. (Allocated here, they made the epoch count references to every view of them.)"""
    T = W.dtype.type
    L = acts.shape[0]
    n = order.shape[0]
    zs0 = T(scale)
    one = T(1)
    total = 0.0
    for start in range(0, n, bs):
        if _load_acquire(stop, 0) != 0:
            break
        m = min2(bs, n - start)
        gather_rows(X, order, start, m, 0, m, xb)
        gather_targets(Y, order, start, m, 0, m, yb)
        prefetch_rows(X, order, start + m, 0, min2(bs, n - start - m))
        prefetch_targets(Y, order, start + m, 0, min2(bs, n - start - m))
        for l in range(L):
            x = xb if l == 0 else A[l - 1]
            forward_units(x, m, lds[l], W, woff[l], b[boff[l]:boff[l] + sizes[l + 1]], 0,
                          sizes[l + 1], zs0 if l == 0 else one, Z[l], gemm_pays_nb(bs, sizes[l + 1], W.itemsize))
            activate_layer(fns, Z[l], A[l], m, sizes[l + 1], l, L, acts, T(slopes[l]))
        out = L - 1
        total += output_deltas_at(fns, SLOT_DELTAS, Z[out], A[out], yb, D[out], m, sizes[L], acts[out],
                                  T(slopes[out]), loss, T(tiny))
        red = 1.0 / m if mean else 1.0
        for l in range(L - 1, -1, -1):
            n_out = sizes[l + 1]
            if l > 0:  # over the padded width: zero weights there give zero deltas
                backprop_units_at(fns, SLOT_BACK, D[l], m, n_out, W, woff[l], lds[l], 0, lds[l], Z[l - 1], A[l - 1],
                                  D[l - 1], acts[l - 1], T(slopes[l - 1]), T(tiny))
            x = xb if l == 0 else A[l - 1]
            update_layer_units_at(fns, SLOT_UPDATE, x, m, lds[l], W, SW, woff[l], b, Sb, boff[l], D[l], 0, n_out,
                                  scale if l == 0 else 1.0, opt, hp, red, start // bs, frozen_w[l], frozen_b[l],
                                  gemm_pays_nb(bs, n_out, W.itemsize))
    return total



# --- the fused epoch, two threads, two layers ------------------------------------------------------
@for_kernels
def _barrier(flags, t, k, stop):
    """Worker t arrived at barrier k (counted from 1): publish, then wait for the other worker.
    Release/acquire: everything written before the barrier is visible to the other after it.
    After SPINS polls it yields the CPU on each poll: on a busy machine, the other worker may be
    waiting for this core. Returns False, without waiting further, once ``stop[0]`` is set (the
    other worker may never arrive: it was stopped, or never started)."""
    _store_release(flags, t * 16, k)
    o = (1 - t) * 16
    spins = 0
    while _load_acquire(flags, o) < k:
        if _load_acquire(stop, 0) != 0:
            return False
        if spins < SPINS:
            _cpu_relax()
            spins += 1
        else:
            _sched_yield()
    return True


@njit(**JIT, _nrt=False)  # (it allocates nothing: no reference counting of its views)
def train_epoch_2t(t, X, scale, Y, order, bs, W, b, SW, Sb, woff, boff, sizes, lds, acts, slopes,
                   frozen_w, frozen_b, loss, opt, hp, mean, tiny, fns, Z, A, D, XW, YB, flags, losses, stop):
    """Worker t (0 or 1) of an epoch on two threads, for networks of two or more layers. The
    first layer (the big one) is split: worker t owns hidden units lo:hi, i.e. their rows of the
    transposed W0 and their entries of b0 (worker 1 the first h, whole cache lines of Z[0]; worker 0
    the rest). Per batch k, both workers compute their units' forward pass into the shared Z[0]
    (own columns) from a private copy of the batch; barrier; worker 0 alone runs the small layers
    above (forward, output delta, their updates) and back-propagates the deltas into D[0], as the
    one-thread kernel does, while worker 1 gathers the next batch into its second buffer; barrier;
    both update their own rows of W0. Worker 0 gathers its copy at the start of each batch, so it
    is given the smaller share of units.
    Between barriers no array is written by one worker and read or written by the other.
    ``stop[0] != 0`` ends both workers early (polled before each batch and in the barriers)."""
    T = W.dtype.type
    n = order.shape[0]
    H = sizes[1]
    h = (H // 2 + 15) // 16 * 16 if H >= 32 else (H // 2 + 3) // 4 * 4 if H >= 8 else (H + 1) // 2
    h = min2(h, H)
    lo, hi = (h, H) if t == 0 else (0, h)
    xw = XW[t]  # this worker's two batch buffers (2 x bs x lds[0])
    yb = YB[t]  # its targets (bs x width), padded like the rows of A
    zs0 = T(scale)
    gemm = gemm_pays_nb(bs, H, W.itemsize)  # the first layer's products by BLAS
    total = 0.0
    nb = (n + bs - 1) // bs
    if t == 1:
        gather_rows(X, order, 0, min2(bs, n), 0, min2(bs, n), xw[0])
    for k in range(nb):
        if _load_acquire(stop, 0) != 0:
            return
        start = k * bs
        m = min2(bs, n - start)
        x = xw[k % 2] if t == 1 else xw[0]
        if t == 0:  # worker 0 gathers its copy of the batch here, and the targets
            gather_rows(X, order, start, m, 0, m, x)
            prefetch_rows(X, order, start + m, 0, min2(bs, n - start - m))
            prefetch_targets(Y, order, start + m, 0, min2(bs, n - start - m))
        forward_units(x, m, lds[0], W, woff[0], b[boff[0]:boff[0] + H], lo, hi, zs0, Z[0], gemm)
        if not _barrier(flags, t, 2 * k + 1, stop):
            return
        red = 1.0 / m if mean else 1.0
        if t == 1 and k + 1 < nb:  # worker 1 gathers the next batch while worker 0 runs the small layers
            nxt = start + m
            mn = min2(bs, n - nxt)
            gather_rows(X, order, nxt, mn, 0, mn, xw[(k + 1) % 2])
            prefetch_rows(X, order, nxt + mn, 0, min2(bs, n - nxt - mn))
        if t == 0:  # (the first layer's activation over all its units: one flat loop)
            gather_targets(Y, order, start, m, 0, m, yb)
            total += layers_above(fns, Z, A, D, yb, m, 0, m, True, True, W, b, SW, Sb, woff, boff, sizes, lds, acts,
                                  slopes, frozen_w, frozen_b, loss, opt, hp, red, k, tiny)
        if not _barrier(flags, t, 2 * k + 2, stop):
            return
        update_layer_units_at(fns, SLOT_UPDATE, x, m, lds[0], W, SW, woff[0], b, Sb, boff[0], D[0], lo, hi, scale,
                              opt, hp, red, k, frozen_w[0], frozen_b[0], gemm)
    losses[t] = total
