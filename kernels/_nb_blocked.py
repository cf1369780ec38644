"""The register-blocked products of a layer in the fused epoch: the forward product
(``forward_units``), the weight
gradient added into the weights or the optimiser's state (``accumulate_units``) within a layer's
update (``update_layer_units``, the rule of ``_nb_optim.py`` around it), and the deltas of the layer below (``backprop_units``).

Layout: each layer's weights are kept TRANSPOSED, row j of ``W`` holding the n_in weights into
unit j (``W[wo + j*n_in + i]`` in one flat buffer for all layers), so that both big loops
(z = x.w forward, w += c*x update) run over contiguous memory and vectorise. Rows are zero-padded
to 128 bytes, so vector loops have no scalar tail. The two big loops are register-blocked: four
units x five samples per pass, so each weight loaded serves five samples and each input value
four units; large batches are taken in chunks of CHUNK samples (L2).
"""
from __future__ import annotations

from numba import njit

from ._nb_common import JIT, separately
from ._nb_intrinsics import _gemm, _rows_dot
from ._nb_math import dact
from ._nb_optim import begin, decay_of, finish, gradient_slot

CHUNK = 40  # samples per pass of the blocked kernels: 40 rows of 784 floats stay in L2
GEMM_ROWS, GEMM_UNITS = 64, 64  # the fused epochs' products of layers this wide, on batches this large: BLAS
N_, T_ = ord("n"), ord("t")  # gemm: an operand as it is, transposed


@separately
def _forward_units(x, s0, s1, ld, W, wo, b, lo, hi, zs, Z):
    """Z[s, j] = zs * (x[s, :ld] . W[wo + j*ld :][:ld]) + b[j] for s < m, lo <= j < hi.
    ``ld`` is the padded row length (zeros beyond n_in, a multiple of the vector length, so the
    vectorised loops need no scalar tail). Blocked: four (then two, then one) units x five samples per pass, so each
    loaded weight serves five samples and each loaded input four units."""
    j = lo
    while j + 4 <= hi:
        w0 = W[wo + j * ld: wo + (j + 1) * ld]
        w1 = W[wo + (j + 1) * ld: wo + (j + 2) * ld]
        w2 = W[wo + (j + 2) * ld: wo + (j + 3) * ld]
        w3 = W[wo + (j + 3) * ld: wo + (j + 4) * ld]
        s = s0
        while s + 5 <= s1:
            x0, x1, x2, x3, x4 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4]
            p00 = p01 = p02 = p03 = p10 = p11 = p12 = p13 = p20 = p21 = p22 = p23 = zs - zs
            p30 = p31 = p32 = p33 = p40 = p41 = p42 = p43 = zs - zs
            for i in range(ld):
                u0 = w0[i]
                u1 = w1[i]
                u2 = w2[i]
                u3 = w3[i]
                t = x0[i]
                p00 += t * u0
                p01 += t * u1
                p02 += t * u2
                p03 += t * u3
                t = x1[i]
                p10 += t * u0
                p11 += t * u1
                p12 += t * u2
                p13 += t * u3
                t = x2[i]
                p20 += t * u0
                p21 += t * u1
                p22 += t * u2
                p23 += t * u3
                t = x3[i]
                p30 += t * u0
                p31 += t * u1
                p32 += t * u2
                p33 += t * u3
                t = x4[i]
                p40 += t * u0
                p41 += t * u1
                p42 += t * u2
                p43 += t * u3
            _store4(Z, s, j, p00, p01, p02, p03, zs, b)
            _store4(Z, s + 1, j, p10, p11, p12, p13, zs, b)
            _store4(Z, s + 2, j, p20, p21, p22, p23, zs, b)
            _store4(Z, s + 3, j, p30, p31, p32, p33, zs, b)
            _store4(Z, s + 4, j, p40, p41, p42, p43, zs, b)
            s += 5
        while s < s1:
            x0 = x[s]
            p00 = p01 = p02 = p03 = zs - zs
            for i in range(ld):
                t = x0[i]
                p00 += t * w0[i]
                p01 += t * w1[i]
                p02 += t * w2[i]
                p03 += t * w3[i]
            _store4(Z, s, j, p00, p01, p02, p03, zs, b)
            s += 1
        j += 4
    if j + 2 <= hi:  # two units left
        w0 = W[wo + j * ld: wo + (j + 1) * ld]
        w1 = W[wo + (j + 1) * ld: wo + (j + 2) * ld]
        s = s0
        while s + 5 <= s1:
            x0, x1, x2, x3, x4 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4]
            p00 = p01 = p10 = p11 = p20 = p21 = p30 = p31 = p40 = p41 = zs - zs
            for i in range(ld):
                u0 = w0[i]
                u1 = w1[i]
                t = x0[i]
                p00 += t * u0
                p01 += t * u1
                t = x1[i]
                p10 += t * u0
                p11 += t * u1
                t = x2[i]
                p20 += t * u0
                p21 += t * u1
                t = x3[i]
                p30 += t * u0
                p31 += t * u1
                t = x4[i]
                p40 += t * u0
                p41 += t * u1
            _store2(Z, s, j, p00, p01, zs, b)
            _store2(Z, s + 1, j, p10, p11, zs, b)
            _store2(Z, s + 2, j, p20, p21, zs, b)
            _store2(Z, s + 3, j, p30, p31, zs, b)
            _store2(Z, s + 4, j, p40, p41, zs, b)
            s += 5
        while s < s1:
            x0 = x[s]
            p00 = p01 = zs - zs
            for i in range(ld):
                t = x0[i]
                p00 += t * w0[i]
                p01 += t * w1[i]
            _store2(Z, s, j, p00, p01, zs, b)
            s += 1
        j += 2
    while j < hi:
        w0 = W[wo + j * ld: wo + (j + 1) * ld]
        s = s0
        while s + 5 <= s1:
            x0, x1, x2, x3, x4 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4]
            p0 = p1 = p2 = p3 = p4 = zs - zs
            for i in range(ld):
                u = w0[i]
                p0 += x0[i] * u
                p1 += x1[i] * u
                p2 += x2[i] * u
                p3 += x3[i] * u
                p4 += x4[i] * u
            Z[s, j] = p0 * zs + b[j]
            Z[s + 1, j] = p1 * zs + b[j]
            Z[s + 2, j] = p2 * zs + b[j]
            Z[s + 3, j] = p3 * zs + b[j]
            Z[s + 4, j] = p4 * zs + b[j]
            s += 5
        while s < s1:
            x0 = x[s]
            p0 = zs - zs
            for i in range(ld):
                p0 += x0[i] * w0[i]
            Z[s, j] = p0 * zs + b[j]
            s += 1
        j += 1


def gemm_pays(bs, n_out):
    """Whether the fused epochs take a layer's products (n_out units, batches of bs) from BLAS."""
    return bs >= GEMM_ROWS and n_out >= GEMM_UNITS


gemm_pays_nb = njit(**JIT)(gemm_pays)  # (the kernels' copy; Python asks gemm_pays)


@njit(**JIT)
def rows(a):
    """The distance between a 2-D array's rows, in elements (its leading dimension to BLAS)."""
    return a.strides[0] // a.itemsize


@njit(**JIT)
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
        _forward_units(x, s0, min(m, s0 + CHUNK), ld, W, wo, b, lo, hi, zs, Z)


@njit(**JIT)
def _store2(Z, s, j, p0, p1, zs, b):
    Z[s, j] = p0 * zs + b[j]
    Z[s, j + 1] = p1 * zs + b[j + 1]


@njit(**JIT)
def _store4(Z, s, j, p0, p1, p2, p3, zs, b):
    Z[s, j] = p0 * zs + b[j]
    Z[s, j + 1] = p1 * zs + b[j + 1]
    Z[s, j + 2] = p2 * zs + b[j + 2]
    Z[s, j + 3] = p3 * zs + b[j + 3]


@separately
def _accumulate_units(x, s0, s1, ld, P, po, D, lo, hi, cs):
    """P[po + j*ld + i] += cs * sum_s D[s, j] * x[s, i] for lo <= j < hi, i < ld (the weight
    gradient, scaled, added straight into the weights or the velocities). Blocked: four units x
    five samples per pass."""
    j = lo
    while j + 4 <= hi:
        t0 = P[po + j * ld: po + (j + 1) * ld]
        t1 = P[po + (j + 1) * ld: po + (j + 2) * ld]
        t2 = P[po + (j + 2) * ld: po + (j + 3) * ld]
        t3 = P[po + (j + 3) * ld: po + (j + 4) * ld]
        s = s0
        while s + 5 <= s1:
            x0, x1, x2, x3, x4 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4]
            c00, c10, c20, c30, c40 = cs * D[s, j], cs * D[s + 1, j], cs * D[s + 2, j], cs * D[s + 3, j], cs * D[s + 4, j]
            j1 = j + 1
            c01, c11, c21, c31, c41 = cs * D[s, j1], cs * D[s + 1, j1], cs * D[s + 2, j1], cs * D[s + 3, j1], cs * D[s + 4, j1]
            j2 = j + 2
            c02, c12, c22, c32, c42 = cs * D[s, j2], cs * D[s + 1, j2], cs * D[s + 2, j2], cs * D[s + 3, j2], cs * D[s + 4, j2]
            j3 = j + 3
            c03, c13, c23, c33, c43 = cs * D[s, j3], cs * D[s + 1, j3], cs * D[s + 2, j3], cs * D[s + 3, j3], cs * D[s + 4, j3]
            for i in range(ld):
                a0, a1, a2, a3, a4 = x0[i], x1[i], x2[i], x3[i], x4[i]
                t0[i] += c00 * a0 + c10 * a1 + c20 * a2 + c30 * a3 + c40 * a4
                t1[i] += c01 * a0 + c11 * a1 + c21 * a2 + c31 * a3 + c41 * a4
                t2[i] += c02 * a0 + c12 * a1 + c22 * a2 + c32 * a3 + c42 * a4
                t3[i] += c03 * a0 + c13 * a1 + c23 * a2 + c33 * a3 + c43 * a4
            s += 5
        while s < s1:
            x0 = x[s]
            c0, c1, c2, c3 = cs * D[s, j], cs * D[s, j + 1], cs * D[s, j + 2], cs * D[s, j + 3]
            for i in range(ld):
                a0 = x0[i]
                t0[i] += c0 * a0
                t1[i] += c1 * a0
                t2[i] += c2 * a0
                t3[i] += c3 * a0
            s += 1
        j += 4
    if j + 2 <= hi:  # two units left
        t0 = P[po + j * ld: po + (j + 1) * ld]
        t1 = P[po + (j + 1) * ld: po + (j + 2) * ld]
        s = s0
        while s + 5 <= s1:
            x0, x1, x2, x3, x4 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4]
            c00, c10, c20, c30, c40 = cs * D[s, j], cs * D[s + 1, j], cs * D[s + 2, j], cs * D[s + 3, j], cs * D[s + 4, j]
            j1 = j + 1
            c01, c11, c21, c31, c41 = cs * D[s, j1], cs * D[s + 1, j1], cs * D[s + 2, j1], cs * D[s + 3, j1], cs * D[s + 4, j1]
            for i in range(ld):
                a0, a1, a2, a3, a4 = x0[i], x1[i], x2[i], x3[i], x4[i]
                t0[i] += c00 * a0 + c10 * a1 + c20 * a2 + c30 * a3 + c40 * a4
                t1[i] += c01 * a0 + c11 * a1 + c21 * a2 + c31 * a3 + c41 * a4
            s += 5
        while s < s1:
            x0 = x[s]
            c0, c1 = cs * D[s, j], cs * D[s, j + 1]
            for i in range(ld):
                a0 = x0[i]
                t0[i] += c0 * a0
                t1[i] += c1 * a0
            s += 1
        j += 2
    while j < hi:
        t0 = P[po + j * ld: po + (j + 1) * ld]
        s = s0
        while s + 5 <= s1:
            x0, x1, x2, x3, x4 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4]
            c0, c1, c2, c3, c4 = cs * D[s, j], cs * D[s + 1, j], cs * D[s + 2, j], cs * D[s + 3, j], cs * D[s + 4, j]
            for i in range(ld):
                t0[i] += c0 * x0[i] + c1 * x1[i] + c2 * x2[i] + c3 * x3[i] + c4 * x4[i]
            s += 5
        while s < s1:
            x0 = x[s]
            c0 = cs * D[s, j]
            for i in range(ld):
                t0[i] += c0 * x0[i]
            s += 1
        j += 1


@njit(**JIT)
def accumulate_units(x, m, ld, P, po, D, lo, hi, cs, gemm):
    """The blocked weight-gradient accumulation over samples 0:m, in chunks of CHUNK samples.
    ``gemm``: by BLAS instead; column-major, P^T += cs * x^T D (P's rows are the columns)."""
    if gemm:
        _gemm(N_, T_, ld, hi - lo, m, cs, x, 0, rows(x), D, lo, rows(D), 1.0, P, po + lo * ld, ld)
        return
    for s0 in range(0, m, CHUNK):
        _accumulate_units(x, s0, min(m, s0 + CHUNK), ld, P, po, D, lo, hi, cs)


@separately
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
        G = b if slot < 0 else Sb[slot]
        for j in range(lo, hi):
            g = D[0, j] - D[0, j]
            for s in range(m):
                g += D[s, j]
            G[bo + j] += cs * g
        finish(opt, hp, b, Sb, bo + lo, bo + hi, 0.0, k)


@njit(**JIT)
def backprop_units(D, m, n_out, W, wo, ld, lo, hi, Zp, Ap, Dp, code, slope, tiny):
    """Deltas of the layer below, for its units lo:hi: Dp[s, i] = f'(z) * sum_j D[s, j] W[j, i]
    (W transposed, stride ld: row j holds the weights of unit j). Uses W before its update.
    Whole 128-byte pieces of lo:hi are one vector combination of the rows each (``_rows_dot``,
    its sums in registers), the rest a plain loop."""
    T = Dp.dtype.type
    lanes = 128 // W.itemsize
    for s in range(m):
        g = Dp[s]
        d = D[s]
        i = lo
        while i + lanes <= hi:
            _rows_dot(W, None, d, 0, n_out, wo + i, ld, g, i)
            i += lanes
        for r in range(i, hi):
            g[r] = T(0)
        for j in range(n_out):
            w = W[wo + j * ld: wo + (j + 1) * ld]
            for r in range(i, hi):
                g[r] += d[j] * w[r]
        z = Zp[s]
        a = Ap[s]
        for r in range(lo, hi):
            v = g[r] * dact(z[r], a[r], code, slope)
            g[r] = v if abs(v) >= tiny else T(0)


# The same deltas compiled apart, for the two-thread and sparse epochs, whose Z, A and D arrays are
# their arguments: linked into train_epoch_2t, this loop made the book's two-thread epoch 1.3x as
# slow; called from the one-thread epoch (whose arrays are its own allocations), the separate copy
# made the Adam epoch at batch 200 8% slower (its backprop phase 13 -> 50 ms). Measured 2026-12-02.
backprop_apart = separately(backprop_units.py_func, name="backprop_apart")
