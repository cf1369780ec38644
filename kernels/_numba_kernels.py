"""Compiled kernels of the numba backend (imported only when that backend is asked for).

Layout inside the fused epoch: each layer's weights are kept TRANSPOSED, row j of ``W`` holding
the n_in weights into unit j (``W[wo + j*n_in + i]`` in one flat buffer for all layers), so that
both big loops (z = x.w forward, w += c*x update) run over contiguous memory and vectorise.
Rows are zero-padded to 128 bytes, so vector loops have no scalar tail. The two big loops are
register-blocked: four units x five samples per pass, so each weight loaded serves five samples
and each input value four units; large batches are taken in chunks of CHUNK samples (L2).
The next batch's input rows are prefetched into L2 while the current batch computes.

Arithmetic stays in the network's dtype (float32 or float64) with fastmath minus nnan/ninf
(LLVM may reassociate sums, which lets reductions vectorise; NaN/inf still propagate so a
diverging run is still detected). ``exp`` is a polynomial (the pip llvmlite has no SVML, and a
library exp keeps the loop scalar); the sigmoid clamps z first, so exp never overflows.
Deltas smaller than ``tiny`` are flushed to zero in the kernel (no process-wide FTZ/DAZ):
saturated sigmoids otherwise produce subnormal floats, which are slow.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import ops

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")

# The activation and loss codes, the cancelling output/loss pairs and the cross-entropy clip, from
# the one table (ops.py); Numba freezes these globals into the compiled code (and its disk cache).
ACT_CODES, LOSS_CODES = ops.ACT_CODES, ops.LOSS_CODES
SIGMOID, TANH, RELU, LEAKY_RELU, IDENTITY, SOFTMAX = (ops.ACT_CODES[name] for name in (
    "sigmoid", "tanh", "relu", "leaky_relu", "identity", "softmax"))
QUADRATIC, MSE, BCE, CE = (ops.LOSS_CODES[name] for name in (
    "quadratic", "mse", "binary_cross_entropy", "cross_entropy"))
# The (activation code, loss code) pairs whose derivatives cancel (delta = a - y). output_delta_row
# tests both inline: that compiles to the same code as the literal test it replaces (a helper
# looping over the pairs compiled differently). A third pair in ops.CANCELLING fails to unpack here.
(CANCEL_ACT_1, CANCEL_LOSS_1), (CANCEL_ACT_2, CANCEL_LOSS_2) = ops.cancelling_codes()
CHUNK = 40  # samples per pass of the blocked kernels: 40 rows of 784 floats stay in L2
SPINS = 2000  # polls of the barrier before yielding the CPU
CLIP32, CLIP64 = ops.LOSS_CLIP["float32"], ops.LOSS_CLIP["float64"]  # the cross-entropy losses' clip
AHEAD = 16  # rows prefetched ahead of the one being gathered


# --- intrinsics: a bit cast for the polynomial exp, atomics for the two-thread barrier -------
@intrinsic
def _i64_as_f64(typingctx, i):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _i32_as_f32(typingctx, i):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _load_acquire(typingctx, arr, idx):
    """``arr[idx]`` (an int64 array) read with acquire ordering."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def _store_release(typingctx, arr, idx, value):
    """``arr[idx] = value`` (an int64 array) written with release ordering."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()
    return types.void(arr, idx, value), codegen


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Prefetch the cache line holding ``arr[idx]`` (a hint; never faults)."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(arr, idx), codegen


@intrinsic
def _cpu_relax(typingctx):
    """The x86 ``pause`` instruction (a hint inside spin loops)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                            "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _sched_yield(typingctx):
    """Give the CPU to another thread (libc's sched_yield)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


# --- scalar math -----------------------------------------------------------------------------
@njit(**JIT)
def exp64(x):
    """exp(x) for |x| <= 708 in float64: 2**n * exp(r) with |r| <= ln2/2, Taylor to degree 13
    (relative error about 2e-16). Vectorises: no calls, no branches."""
    n = np.floor(x * 1.4426950408889634 + 0.5)
    r = (x - n * 0.6931471803691238) - n * 1.9082149292705877e-10
    p = 1.6059043836821613e-10
    p = p * r + 2.08767569878681e-09
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _i64_as_f64((np.int64(n) + 1023) << 52)


@njit(**JIT)
def exp32(x):
    """exp(x) for |x| <= 87 in float32 (Cephes' expf polynomial, relative error about 2e-7)."""
    n = np.floor(x * np.float32(1.442695) + np.float32(0.5))
    r = (x - n * np.float32(0.693359375)) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _i32_as_f32((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(**JIT)
def sigmoid32(z):
    z = min(max(z, np.float32(-87.0)), np.float32(87.0))
    return np.float32(1.0) / (np.float32(1.0) + exp32(-z))


@njit(**JIT)
def sigmoid64(z):
    z = min(max(z, -700.0), 700.0)
    return 1.0 / (1.0 + exp64(-z))


@njit(**JIT)
def tanh64(z):
    z = min(max(z, -20.0), 20.0)
    return 1.0 - 2.0 / (exp64(2.0 * z) + 1.0)


@njit(**JIT)
def dact(z, a, code, slope):
    """f'(z) of an elementwise activation, from z and a = f(z), in the dtype of ``a``."""
    one = a - a + 1
    if code == SIGMOID:
        return a * (one - a)
    if code == TANH:
        return one - a * a
    if code == RELU:
        return one if z > 0 else one - one
    if code == LEAKY_RELU:
        return one if z > 0 else slope
    return one


# --- layer math on batch rows ------------------------------------------------------------------
@njit(**JIT)
def activate_rows(Z, A, m, lo, hi, code, slope):
    """A[s, lo:hi] = f(Z[s, lo:hi]) for s < m (softmax over the whole of lo:hi)."""
    T = A.dtype.type
    for s in range(m):
        z = Z[s]
        a = A[s]
        if code == SIGMOID and A.itemsize == 4:
            for j in range(lo, hi):
                a[j] = T(sigmoid32(np.float32(z[j])))
        elif code == SIGMOID:
            for j in range(lo, hi):
                a[j] = T(sigmoid64(np.float64(z[j])))
        elif code == TANH:
            for j in range(lo, hi):
                a[j] = T(tanh64(np.float64(z[j])))
        elif code == RELU:
            for j in range(lo, hi):
                a[j] = z[j] if z[j] > 0 else T(0)
        elif code == LEAKY_RELU:
            for j in range(lo, hi):
                a[j] = z[j] if z[j] > 0 else slope * z[j]
        elif code == IDENTITY:
            for j in range(lo, hi):
                a[j] = z[j]
        else:  # softmax
            mx = z[lo]
            for j in range(lo, hi):
                mx = max(mx, z[j])
            total = 0.0
            for j in range(lo, hi):
                e = exp64(max(np.float64(z[j] - mx), -700.0))
                a[j] = T(e)
                total += e
            inv = 1.0 / total
            for j in range(lo, hi):
                a[j] = T(a[j] * inv)


@njit(**JIT)
def activate_full(Z, A, m, n, code, slope):
    """A[s, :n] = f(Z[s, :n]) for s < m, and zeros in A[s, n:] (the padding, which the next
    layer reads). Elementwise activations run as one flat loop over the m whole rows: one long
    vectorised loop instead of m short ones with scalar tails."""
    T = A.dtype.type
    if code == SOFTMAX:
        activate_rows(Z, A, m, 0, n, code, slope)
        return
    width = Z.shape[1]
    z = Z.reshape(Z.size)
    a = A.reshape(A.size)
    count = m * width
    if code == SIGMOID and A.itemsize == 4:
        for j in range(count):
            a[j] = T(sigmoid32(np.float32(z[j])))
    elif code == SIGMOID:
        for j in range(count):
            a[j] = T(sigmoid64(np.float64(z[j])))
    elif code == TANH:
        for j in range(count):
            a[j] = T(tanh64(np.float64(z[j])))
    elif code == RELU:
        for j in range(count):
            a[j] = z[j] if z[j] > 0 else T(0)
    elif code == LEAKY_RELU:
        for j in range(count):
            a[j] = z[j] if z[j] > 0 else slope * z[j]
    else:
        for j in range(count):
            a[j] = z[j]
    if n < width:
        for s in range(m):
            for j in range(n, width):
                A[s, j] = T(0)


@njit(**JIT)
def output_delta_row(z, a, y, d, n, act, slope, loss, tiny):
    """dL/dz of one sample into d[:n]; returns the sample's loss (float64). Branches stay
    outside the loops, so each loop vectorises."""
    T = d.dtype.type
    clip = CLIP32 if d.itemsize == 4 else CLIP64  # in the array's own dtype, as NumPy clips
    value = 0.0
    if loss == QUADRATIC:
        for k in range(n):
            e = a[k] - y[k]
            value += 0.5 * np.float64(e * e)
            d[k] = e
    elif loss == MSE:
        for k in range(n):
            e = np.float64(a[k]) - np.float64(y[k])
            value += e * e / n
            d[k] = T(2.0 * e / n)
    elif loss == BCE:
        for k in range(n):
            c = min(max(np.float64(a[k]), clip), 1.0 - clip)
            yk = np.float64(y[k])
            value -= yk * math.log(c) + (1.0 - yk) * math.log(1.0 - c)
            d[k] = T((c - yk) / (c * (1.0 - c)))
    else:
        for k in range(n):
            c = max(np.float64(a[k]), clip)
            yk = np.float64(y[k])
            value -= yk * math.log(c)
            d[k] = T(-yk / c)
    if (act == CANCEL_ACT_1 and loss == CANCEL_LOSS_1) or (act == CANCEL_ACT_2 and loss == CANCEL_LOSS_2):
        for k in range(n):
            d[k] = a[k] - y[k]  # the derivative of the activation cancels
    elif act == SOFTMAX:
        dot = d[0] - d[0]
        for k in range(n):
            dot += d[k] * a[k]
        for k in range(n):
            d[k] = a[k] * (d[k] - dot)
    elif act == SIGMOID:
        for k in range(n):
            d[k] *= a[k] * (T(1) - a[k])
    elif act != IDENTITY:
        for k in range(n):
            d[k] *= dact(z[k], a[k], act, slope)
    for k in range(n):
        d[k] = d[k] if abs(d[k]) >= tiny else T(0)
    return value


@njit(**JIT)
def flat_delta_covers(act, loss):
    """Whether ``output_delta_flat`` computes this output layer's deltas."""
    return (loss == QUADRATIC or loss == MSE) and act != SOFTMAX


@njit(**JIT)
def output_delta_flat(Z, A, Yb, D, m, n, act, slope, loss, tiny):
    """The output deltas of samples 0:m at once (quadratic or mse loss, elementwise activation):
    one flat loop over the m padded rows, as ``activate_full`` does; the zero padding of A and Yb
    gives zero deltas there. Same values as ``output_delta_row``; returns the summed loss."""
    T = D.dtype.type
    count = m * D.shape[1]
    z = Z.reshape(Z.size)
    a = A.reshape(A.size)
    y = Yb.reshape(Yb.size)
    d = D.reshape(D.size)
    value = 0.0
    for k in range(count):
        e = a[k] - y[k]
        value += np.float64(e * e)
        d[k] = e
    if loss == MSE:
        value /= n
        c = T(2.0 / n)
        for k in range(count):
            d[k] *= c
    else:
        value *= 0.5
    if act == SIGMOID:
        for k in range(count):
            d[k] *= a[k] * (T(1) - a[k])
    elif act != IDENTITY:
        for k in range(count):
            d[k] *= dact(z[k], a[k], act, slope)
    for k in range(count):
        d[k] = d[k] if abs(d[k]) >= tiny else T(0)
    return value


@njit(**JIT)
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


@njit(**JIT)
def forward_units(x, m, ld, W, wo, b, lo, hi, zs, Z):
    """The blocked forward product over samples 0:m, in chunks of CHUNK samples: a chunk of
    inputs stays in L2 while every unit's weights pass over it (large batches)."""
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


@njit(**JIT)
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
def accumulate_units(x, m, ld, P, po, D, lo, hi, cs):
    """The blocked weight-gradient accumulation over samples 0:m, in chunks of CHUNK samples."""
    for s0 in range(0, m, CHUNK):
        _accumulate_units(x, s0, min(m, s0 + CHUNK), ld, P, po, D, lo, hi, cs)


@njit(**JIT)
def update_layer_units(x, m, ld, W, VW, wo, b, vb, D, lo, hi, zs, step, mu, decay, frozen_w, frozen_b):
    """One SGD step for units lo:hi of a layer (rows of the transposed W, stride ld), from the
    deltas D and the inputs x (scaled by zs): u = step*g + decay*w; with momentum v = mu*v - u,
    w += v, else w -= u. Biases: the same without decay."""
    T = W.dtype.type
    if not frozen_w:
        lo_i = wo + lo * ld
        hi_i = wo + hi * ld
        if mu > 0:
            for i in range(lo_i, hi_i):
                VW[i] = T(mu) * VW[i] - T(decay) * W[i]
            accumulate_units(x, m, ld, VW, wo, D, lo, hi, T(-step * zs))
            for i in range(lo_i, hi_i):
                W[i] += VW[i]
        else:
            if decay > 0:
                keep = T(1.0 - decay)
                for i in range(lo_i, hi_i):
                    W[i] *= keep
            accumulate_units(x, m, ld, W, wo, D, lo, hi, T(-step * zs))
    if not frozen_b:
        for j in range(lo, hi):
            g = D[0, j] - D[0, j]
            for s in range(m):
                g += D[s, j]
            if mu > 0:
                vb[j] = T(mu) * vb[j] - T(step) * g
                b[j] += vb[j]
            else:
                b[j] -= T(step) * g


@njit(**JIT)
def backprop_units(D, m, n_out, W, wo, ld, lo, hi, Zp, Ap, Dp, code, slope, tiny):
    """Deltas of the layer below, for its units lo:hi: Dp[s, i] = f'(z) * sum_j D[s, j] W[j, i]
    (W transposed, stride ld: row j holds the weights of unit j). Uses W before its update."""
    T = Dp.dtype.type
    for s in range(m):
        g = Dp[s]
        for i in range(lo, hi):
            g[i] = T(0)
        for j in range(n_out):
            d = D[s, j]
            w = W[wo + j * ld: wo + (j + 1) * ld]
            for i in range(lo, hi):
                g[i] += d * w[i]
        z = Zp[s]
        a = Ap[s]
        for i in range(lo, hi):
            v = g[i] * dact(z[i], a[i], code, slope)
            g[i] = v if abs(v) >= tiny else T(0)


@njit(**JIT)
def gather_rows(X, order, start, m, lo, hi, xb):
    """xb[s, :n_in] = X[order[start + s], :] as floats (uint8 stays unscaled), lo <= s < min(hi, m).
    Row s + AHEAD is prefetched while row s is converted: in large batches, where the rows
    prefetched during the previous batch (``prefetch_rows``, at most AHEAD) run out."""
    T = xb.dtype.type
    n_in = X.shape[1]
    end = min(hi, m)
    for s in range(lo, end):
        if s + AHEAD < end:
            prefetch_row(X, order[start + s + AHEAD])
        r = X[order[start + s]]
        o = xb[s]
        for i in range(n_in):
            o[i] = T(r[i])


@njit(**JIT)
def prefetch_row(X, k):
    """Ask the CPU to start loading row X[k] into the cache (every line of it)."""
    r = X[k]
    n_in = X.shape[1]
    for i in range(0, n_in, max(1, 64 // X.itemsize)):
        _prefetch(r, i)
    _prefetch(r, n_in - 1)  # rows do not start on a cache line: the last line may be one more


@njit(**JIT)
def prefetch_rows(X, order, start, lo, hi):
    """Prefetch rows X[order[start + s]] for lo <= s < min(hi, lo + AHEAD) (the start of the next
    batch, while this one computes; ``gather_rows`` prefetches the rest as it goes). More at once
    would only queue behind each other and evict the working set."""
    for s in range(lo, min(hi, lo + AHEAD)):
        prefetch_row(X, order[start + s])


@njit(**JIT)
def zeros_aligned(shape, like):
    """Zeros of ``like``'s dtype whose data starts on a 128-byte boundary (Numba's own arrays are
    32-byte aligned, so half of the 64-byte vector loads of each row would split cache lines)."""
    size = 1
    for k in shape:
        size *= k
    extra = 128 // like.itemsize
    buf = np.zeros(size + extra, like.dtype)
    off = ((128 - buf.ctypes.data % 128) % 128) // like.itemsize
    return buf[off:off + size].reshape(shape)


@njit(**JIT)
def output_deltas(Z, A, Yb, D, m, n, act, slope, loss, tiny):
    """dL/dz of the output layer for samples 0:m into D; returns the summed loss (float64)."""
    if flat_delta_covers(act, loss):
        return output_delta_flat(Z, A, Yb, D, m, n, act, slope, loss, tiny)
    total = 0.0
    for s in range(m):
        total += output_delta_row(Z[s], A[s], Yb[s], D[s], n, act, slope, loss, tiny)
    return total


# --- the fused epoch, one thread, any depth ------------------------------------------------------
@njit(**JIT)
def train_epoch(X, scale, Y, order, bs, W, b, VW, vb, woff, boff, sizes, lds, acts, slopes,
                frozen_w, frozen_b, loss, lr, mu, wd, mean, tiny, stop):
    """One epoch of mini-batch SGD over X[order]. W holds every layer's weights transposed
    (layer l: rows of stride lds[l] from woff[l], zero-padded), b the biases (from boff[l]);
    both are modified in place, with the velocities VW/vb under momentum.
    Returns the summed loss of the epoch (float64). ``stop[0] != 0`` (set by another thread,
    polled before each batch) ends the epoch early: the caller then discards W, b, VW and vb."""
    T = W.dtype.type
    L = acts.shape[0]
    n = order.shape[0]
    maxw = 1
    for l in range(1, L + 1):
        maxw = max(maxw, lds[l])
    xb = zeros_aligned((bs, lds[0]), W)
    yb = zeros_aligned((bs, maxw), W)  # targets padded like the rows of A (see output_delta_flat)
    Z = zeros_aligned((L, bs, maxw), W)
    A = zeros_aligned((L, bs, maxw), W)
    D = zeros_aligned((L, bs, maxw), W)
    zs0 = T(scale)
    one = T(1)
    decay = lr * wd
    total = 0.0
    for start in range(0, n, bs):
        if _load_acquire(stop, 0) != 0:
            break
        m = min(bs, n - start)
        gather_rows(X, order, start, m, 0, m, xb)
        gather_rows(Y, order, start, m, 0, m, yb)
        prefetch_rows(X, order, start + m, 0, min(bs, n - start - m))
        prefetch_rows(Y, order, start + m, 0, min(bs, n - start - m))  # target rows miss the cache too
        for l in range(L):
            x = xb if l == 0 else A[l - 1]
            forward_units(x, m, lds[l], W, woff[l], b[boff[l]:boff[l] + sizes[l + 1]], 0,
                          sizes[l + 1], zs0 if l == 0 else one, Z[l])
            activate_full(Z[l], A[l], m, sizes[l + 1], acts[l], T(slopes[l]))
        out = L - 1
        total += output_deltas(Z[out], A[out], yb, D[out], m, sizes[L], acts[out], T(slopes[out]), loss, T(tiny))
        step = lr / m if mean else lr
        for l in range(L - 1, -1, -1):
            n_out = sizes[l + 1]
            if l > 0:  # over the padded width: zero weights there give zero deltas
                backprop_units(D[l], m, n_out, W, woff[l], lds[l], 0, lds[l], Z[l - 1], A[l - 1],
                               D[l - 1], acts[l - 1], T(slopes[l - 1]), T(tiny))
            x = xb if l == 0 else A[l - 1]
            update_layer_units(x, m, lds[l], W, VW, woff[l], b[boff[l]:boff[l] + n_out],
                               vb[boff[l]:boff[l] + n_out], D[l], 0, n_out,
                               scale if l == 0 else 1.0, step, mu, decay, frozen_w[l], frozen_b[l])
    return total


# --- the fused epoch, two threads, two layers ------------------------------------------------------
@njit(**JIT)
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


@njit(**JIT)
def train_epoch_2t(t, X, scale, Y, order, bs, W, b, VW, vb, woff, boff, sizes, lds, acts, slopes,
                   frozen_w, frozen_b, loss, lr, mu, wd, mean, tiny, Z, A, D, flags, losses, stop):
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
    L = acts.shape[0]
    n = order.shape[0]
    H = sizes[1]
    h = (H // 2 + 15) // 16 * 16 if H >= 32 else (H // 2 + 3) // 4 * 4 if H >= 8 else (H + 1) // 2
    h = min(h, H)
    lo, hi = (h, H) if t == 0 else (0, h)
    xw = zeros_aligned((2, bs, lds[0]), W)  # private: LLVM knows it aliases nothing
    yb = zeros_aligned((bs, D.shape[2]), W)  # padded like the rows of A
    zs0 = T(scale)
    one = T(1)
    decay = lr * wd
    total = 0.0
    nb = (n + bs - 1) // bs
    if t == 1:
        gather_rows(X, order, 0, min(bs, n), 0, min(bs, n), xw[0])
    for k in range(nb):
        if _load_acquire(stop, 0) != 0:
            return
        start = k * bs
        m = min(bs, n - start)
        x = xw[k % 2] if t == 1 else xw[0]
        if t == 0:  # worker 0 gathers its copy of the batch here, and the targets
            gather_rows(X, order, start, m, 0, m, x)
            prefetch_rows(X, order, start + m, 0, min(bs, n - start - m))
            prefetch_rows(Y, order, start + m, 0, min(bs, n - start - m))
        forward_units(x, m, lds[0], W, woff[0], b[boff[0]:boff[0] + H], lo, hi, zs0, Z[0])
        if not _barrier(flags, t, 2 * k + 1, stop):
            return
        step = lr / m if mean else lr
        if t == 1 and k + 1 < nb:  # worker 1 gathers the next batch while worker 0 runs the small layers
            nxt = start + m
            mn = min(bs, n - nxt)
            gather_rows(X, order, nxt, mn, 0, mn, xw[(k + 1) % 2])
            prefetch_rows(X, order, nxt + mn, 0, min(bs, n - nxt - mn))
        if t == 0:
            gather_rows(Y, order, start, m, 0, m, yb)
            activate_full(Z[0], A[0], m, H, acts[0], T(slopes[0]))  # the whole first layer: one flat loop
            for l in range(1, L):
                forward_units(A[l - 1], m, lds[l], W, woff[l], b[boff[l]:boff[l] + sizes[l + 1]], 0,
                              sizes[l + 1], one, Z[l])
                activate_full(Z[l], A[l], m, sizes[l + 1], acts[l], T(slopes[l]))
            out = L - 1
            total += output_deltas(Z[out], A[out], yb, D[out], m, sizes[L], acts[out], T(slopes[out]), loss,
                                   T(tiny))
            for l in range(L - 1, 0, -1):
                backprop_units(D[l], m, sizes[l + 1], W, woff[l], lds[l], 0, lds[l], Z[l - 1], A[l - 1],
                               D[l - 1], acts[l - 1], T(slopes[l - 1]), T(tiny))
                update_layer_units(A[l - 1], m, lds[l], W, VW, woff[l], b[boff[l]:boff[l] + sizes[l + 1]],
                                   vb[boff[l]:boff[l] + sizes[l + 1]], D[l], 0, sizes[l + 1], 1.0, step, mu,
                                   decay, frozen_w[l], frozen_b[l])
        if not _barrier(flags, t, 2 * k + 2, stop):
            return
        update_layer_units(x, m, lds[0], W, VW, woff[0], b[boff[0]:boff[0] + H], vb[boff[0]:boff[0] + H],
                           D[0], lo, hi, scale, step, mu, decay, frozen_w[0], frozen_b[0])
    losses[t] = total


# --- per-batch kernels (the generic path) -----------------------------------------------------------
@njit(**JIT)
def activate(z, code, slope):
    a = np.empty_like(z)
    activate_rows(z, a, z.shape[0], 0, z.shape[1], code, slope)
    return a


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


@njit(**JIT)
def sgd_update(p, g, v, step, mu, decay):
    """Flat arrays, in place: u = step*g + decay*p; momentum: v = mu*v - u, p += v; else p -= u."""
    T = p.dtype.type
    if mu > 0:
        for i in range(p.shape[0]):
            v[i] = T(mu) * v[i] - (T(step) * g[i] + T(decay) * p[i])
            p[i] += v[i]
    else:
        for i in range(p.shape[0]):
            p[i] -= T(step) * g[i] + T(decay) * p[i]
