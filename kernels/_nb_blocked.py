"""The register-blocked products of a layer in the fused epoch: the forward product
(``forward_units``), the weight
gradient added into the weights or the optimiser's state (``accumulate_units``) within a layer's
update (``update_layer_units``, the rule of ``_nb_optim.py`` around it), and the deltas of the layer below (``backprop_units``).

Layout: each layer's weights are kept TRANSPOSED, row j of ``W`` holding the n_in weights into
unit j (``W[wo + j*n_in + i]`` in one flat buffer for all layers), so that both big loops
(z = x.w forward, w += c*x update) run over contiguous memory and vectorise. Rows are zero-padded
to 128 bytes, so vector loops have no scalar tail. The two big loops are register-blocked
(``_dot_block``, ``_axpy_block``: vector code of the machine's width): UNITS units x SAMPLES
samples per pass, so each weight loaded serves SAMPLES samples and each input value UNITS units;
large batches are taken in chunks of CHUNK samples (L2).
"""
from __future__ import annotations

from numba import njit, types

from ._nb_common import INLINE, separately
from ._nb_intrinsics import REGISTERS, _axpy_block, _dot_block, _gemm, _rows_dot, min2
from ._nb_math import dact
from ._nb_optim import begin, decay_of, finish, gradient_slot

CHUNK = 40  # samples per pass of the blocked kernels: 40 rows of 784 floats stay in L2
GEMM_ROWS, GEMM_UNITS = 64, 64  # the fused epochs' products of layers this wide, on batches this large: BLAS
# float32 with AVX-512's 32 registers: the blocked loops beat OpenBLAS's sgemm up to about 256 units
# (Adam epoch, 784-100-10 at batch 200: 0.91x; 150 units at 128: 0.93x; 200: 0.97x; 256: 1.01x;
# 400: 1.08x; float64 the same either way; Intel Xeon AVX-512, 2026-12-02)
GEMM_UNITS_32 = 256 if REGISTERS >= 32 else GEMM_UNITS
N_, T_ = ord("n"), ord("t")  # gemm: an operand as it is, transposed
# The blocked products' shape: UNITS x SAMPLES sums in registers, plus UNITS weight vectors and one
# input vector (forward), or SAMPLES inputs and UNITS x SAMPLES coefficients (gradient): 4 x 5 in
# AVX-512's 32 registers; 2 x 5 in AVX2's 16 (4 x 5 spilled there: the forward product at 28
# against 57 GFLOP/s, znver3, 784-30, batch 10, 2026-12-02). HALF: the units left over.
UNITS, SAMPLES = (4, 5) if REGISTERS >= 32 else (2, 5)
HALF = max(1, UNITS // 2)


@separately(returns=types.none)
def _forward_units(x, s0, s1, ld, W, wo, b, lo, hi, zs, Z):
    """Z[s, j] = zs * (x[s, :ld] . W[wo + j*ld :][:ld]) + b[j] for s0 <= s < s1, lo <= j < hi.
    ``ld`` is the padded row length (zeros beyond n_in, a multiple of the vector length, so the
    vector loops need no scalar tail). Blocked (``_dot_block``): UNITS units x SAMPLES samples per
    pass, so each loaded weight serves SAMPLES samples and each loaded input UNITS units (then
    half as many units, then one; single samples at the end). Samples outside, units inside:
    SAMPLES rows of inputs stay in L1 while the weights stream from L2 (the other way round, the
    inputs streamed from L2 for each pair of units: 54 against 62 GFLOP/s, 200 x 784 x 100)."""
    s = s0
    while s < s1:
        j = lo
        if s + SAMPLES <= s1:
            while j + UNITS <= hi:
                _dot_block(x, s, ld, W, wo + j * ld, zs, b, Z, j, UNITS, SAMPLES)
                j += UNITS
            if HALF > 1:  # (a constant: with AVX2's two units a block, no such loop)
                while j + HALF <= hi:
                    _dot_block(x, s, ld, W, wo + j * ld, zs, b, Z, j, HALF, SAMPLES)
                    j += HALF
            while j < hi:
                _dot_block(x, s, ld, W, wo + j * ld, zs, b, Z, j, 1, SAMPLES)
                j += 1
            s += SAMPLES
        else:
            while j + UNITS <= hi:
                _dot_block(x, s, ld, W, wo + j * ld, zs, b, Z, j, UNITS, 1)
                j += UNITS
            if HALF > 1:
                while j + HALF <= hi:
                    _dot_block(x, s, ld, W, wo + j * ld, zs, b, Z, j, HALF, 1)
                    j += HALF
            while j < hi:
                _dot_block(x, s, ld, W, wo + j * ld, zs, b, Z, j, 1, 1)
                j += 1
            s += 1


def gemm_pays(bs, n_out, itemsize):
    """Whether the fused epochs take a layer's products (n_out units, batches of bs, weights of
    itemsize bytes) from BLAS."""
    return bs >= GEMM_ROWS and n_out >= (GEMM_UNITS_32 if itemsize == 4 else GEMM_UNITS)


gemm_pays_nb = njit(**INLINE)(gemm_pays)  # (the kernels' copy; Python asks gemm_pays)


@njit(**INLINE)
def rows(a):
    """The distance between a 2-D array's rows, in elements (its leading dimension to BLAS)."""
    return a.strides[0] // a.itemsize


@njit(**INLINE)
def forward_units(x, m, ld, W, wo, b, lo, hi, zs, Z, gemm):
    """The blocked forward product over samples 0:m, in chunks of CHUNK samples: a chunk of
    inputs stays in L2 while every unit's weights pass over it (large batches). ``gemm``: by
    BLAS instead; column-major, the product is Z^T = zs * W x^T (W's rows are the columns of a
    column-major matrix), then the biases are added."""
    if gemm:
        _gemm(T_, N_, hi - lo, m, ld, zs, W, wo + lo * ld, ld, x, 0, rows(x), 0.0, Z, lo, rows(Z))
        bias = b[lo:hi]
        for s in range(m):
            z = Z[s, lo:hi]
            for j in range(z.shape[0]):
                z[j] += bias[j]
        return
    for s0 in range(0, m, CHUNK):
        _forward_units(x, s0, min2(m, s0 + CHUNK), ld, W, wo, b, lo, hi, zs, Z)


@separately(returns=types.none)
def _accumulate_units(x, s0, s1, ld, P, po, D, lo, hi, cs):
    """P[po + j*ld + i] += cs * sum_s D[s, j] * x[s, i] for lo <= j < hi, i < ld, s0 <= s < s1
    (the weight gradient, scaled, added straight into the weights or the velocities), the
    samples' terms added in order. Blocked as ``_forward_units`` (``_axpy_block``)."""
    j = lo
    while j + UNITS <= hi:
        s = s0
        while s + SAMPLES <= s1:
            _axpy_block(x, s, ld, P, po + j * ld, D, j, cs, UNITS, SAMPLES)
            s += SAMPLES
        while s < s1:
            _axpy_block(x, s, ld, P, po + j * ld, D, j, cs, UNITS, 1)
            s += 1
        j += UNITS
    if HALF > 1:  # (a constant: with AVX2's two units a block, no such loop)
        while j + HALF <= hi:
            s = s0
            while s + SAMPLES <= s1:
                _axpy_block(x, s, ld, P, po + j * ld, D, j, cs, HALF, SAMPLES)
                s += SAMPLES
            while s < s1:
                _axpy_block(x, s, ld, P, po + j * ld, D, j, cs, HALF, 1)
                s += 1
            j += HALF
    while j < hi:
        s = s0
        while s + SAMPLES <= s1:
            _axpy_block(x, s, ld, P, po + j * ld, D, j, cs, 1, SAMPLES)
            s += SAMPLES
        while s < s1:
            _axpy_block(x, s, ld, P, po + j * ld, D, j, cs, 1, 1)
            s += 1
        j += 1


@njit(**INLINE)
def accumulate_units(x, m, ld, P, po, D, lo, hi, cs, gemm):
    """The blocked weight-gradient accumulation over samples 0:m, in chunks of CHUNK samples.
    ``gemm``: by BLAS instead; column-major, P^T += cs * x^T D (P's rows are the columns)."""
    if gemm:
        _gemm(N_, T_, ld, hi - lo, m, cs, x, 0, rows(x), D, lo, rows(D), 1.0, P, po + lo * ld, ld)
        return
    for s0 in range(0, m, CHUNK):
        _accumulate_units(x, s0, min2(m, s0 + CHUNK), ld, P, po, D, lo, hi, cs)


@separately(constants=("opt",), returns=types.none)
def update_layer_units(x, m, ld, W, SW, wo, b, Sb, bo, D, lo, hi, zs, opt, hp, scale, k, frozen_w, frozen_b, gemm):
    """One optimiser step for units lo:hi of a layer (rows of the transposed W from ``wo``, stride
    ld; its biases from ``bo`` in b), from the deltas D and the inputs x (scaled by zs): the rule
    of ``_nb_optim.py`` (``opt``, hyperparameters ``hp``, state ``SW``/``Sb``) around the
    gradient, which is added straight into the array the rule names, times ``scale`` (1/m for
    mean gradients); ``k``: the batch's index in the epoch (Adam's step); ``gemm``: the gradient by
    BLAS. Weight decay applies to the weights only."""
    T = W.dtype.type
    slot = gradient_slot(opt, hp)
    if not frozen_w:
        lo_i, hi_i = wo + lo * ld, wo + hi * ld
        wd = decay_of(hp, scale)
        cs = T(begin(opt, hp, W, SW, lo_i, hi_i, wd) * scale * zs)
        if slot < 0:
            accumulate_units(x, m, ld, W, wo, D, lo, hi, cs, gemm)
        else:
            accumulate_units(x, m, ld, SW[slot], wo, D, lo, hi, cs, gemm)
        finish(opt, hp, W, SW, lo_i, hi_i, wd, k)
    if not frozen_b:
        cs = T(begin(opt, hp, b, Sb, bo + lo, bo + hi, 0.0) * scale)
        # each sample's scaled deltas added in turn, as the weights' gradient is: vector adds along
        # the units (the sum down each column of D first was one chain of scalar adds per unit)
        g = (b if slot < 0 else Sb[slot])[bo + lo:bo + hi]
        for s in range(m):
            d = D[s, lo:hi]
            for j in range(g.shape[0]):
                g[j] += cs * d[j]
        finish(opt, hp, b, Sb, bo + lo, bo + hi, 0.0, k)


@separately(constants=("code",), returns=types.none)
def backprop_units(D, m, n_out, W, wo, ld, lo, hi, Zp, Ap, Dp, code, slope, tiny):
    """Deltas of the layer below, for its units lo:hi: Dp[s, i] = f'(z) * sum_j D[s, j] W[j, i]
    (W transposed, stride ld: row j holds the weights of unit j). Uses W before its update.
    Called by address, compiled for the hidden layers' activation (``code``: with a code at run
    time, LLVM computed every activation's derivative and blended them).
    Whole 128-byte pieces of lo:hi are one vector combination of the rows each (``_rows_dot``,
    its sums in registers), the rest a plain loop. Every loop runs over a slice from 0: an index
    from ``lo`` could be negative to Numba, which then wraps it, and LLVM does not vectorise the
    loop (this function took 3x as long that way: 1.0 against 0.4 us for 10 samples of 32 units)."""
    T = Dp.dtype.type
    lanes = 128 // W.itemsize
    for s in range(m):
        d = D[s]
        i = lo
        while i + lanes <= hi:
            _rows_dot(W, None, d, 0, n_out, wo + i, ld, Dp[s], i)
            i += lanes
        if i < hi:
            t = Dp[s, i:hi]
            for r in range(t.shape[0]):
                t[r] = T(0)
            for j in range(n_out):
                w = W[wo + j * ld + i: wo + j * ld + hi]
                for r in range(t.shape[0]):
                    t[r] += d[j] * w[r]
        g = Dp[s, lo:hi]
        z = Zp[s, lo:hi]
        a = Ap[s, lo:hi]
        for r in range(g.shape[0]):
            v = g[r] * dact(z[r], a[r], code, slope)
            g[r] = v if abs(v) >= tiny else T(0)


update_layer_units_at, backprop_units_at = update_layer_units.at, backprop_units.at  # (by address: see separately)
