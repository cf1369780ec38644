"""Compiled kernels of the numba backend (imported only when that backend is asked for).

Layout inside the fused epoch: each layer's weights are kept TRANSPOSED, row j of ``W`` holding
the n_in weights into unit j (``W[wo + j*n_in + i]`` in one flat buffer for all layers), so that
both big loops (z = x.w forward, w += c*x update) run over contiguous memory and vectorise.
The two big loops are register-blocked: two units x five samples per pass, so each weight loaded
serves five samples and each input value serves two units.

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

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")

SIGMOID, TANH, RELU, LEAKY_RELU, IDENTITY, SOFTMAX = range(6)
ACT_CODES = {"sigmoid": SIGMOID, "tanh": TANH, "relu": RELU, "leaky_relu": LEAKY_RELU,
             "identity": IDENTITY, "softmax": SOFTMAX}
QUADRATIC, MSE, BCE, CE = range(4)
LOSS_CODES = {"quadratic": QUADRATIC, "mse": MSE, "binary_cross_entropy": BCE, "cross_entropy": CE}
TINY = 1e-12  # the NumPy reference's clip in the cross-entropy losses


# --- intrinsics: a bit cast for the polynomial exp, atomics for the two-thread barrier -------
@intrinsic
def _i64_as_f64(typingctx, i):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


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
def _cpu_relax(typingctx):
    """The x86 ``pause`` instruction (a hint inside spin loops)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                            "llvm.x86.sse2.pause")
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
        if code == SIGMOID:
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
def output_delta_row(z, a, y, d, n, act, slope, loss, tiny):
    """dL/dz of one sample into d[:n]; returns the sample's loss (float64)."""
    T = d.dtype.type
    value = 0.0
    for k in range(n):  # the loss value and dL/da
        ak = np.float64(a[k])
        yk = np.float64(y[k])
        if loss == QUADRATIC:
            value += 0.5 * (ak - yk) ** 2
            d[k] = a[k] - y[k]
        elif loss == MSE:
            value += (ak - yk) ** 2 / n
            d[k] = T(2.0 * (ak - yk) / n)
        elif loss == BCE:
            c = min(max(ak, TINY), 1.0 - TINY)
            value -= yk * math.log(c) + (1.0 - yk) * math.log(1.0 - c)
            d[k] = T((c - yk) / (c * (1.0 - c)))
        else:
            c = max(ak, TINY)
            value -= yk * math.log(c)
            d[k] = T(-yk / c)
    if (act == SIGMOID and loss == BCE) or (act == SOFTMAX and loss == CE):
        for k in range(n):
            d[k] = a[k] - y[k]  # the derivative of the activation cancels
    elif act == SOFTMAX:
        dot = d[0] - d[0]
        for k in range(n):
            dot += d[k] * a[k]
        for k in range(n):
            d[k] = a[k] * (d[k] - dot)
    else:
        for k in range(n):
            d[k] *= dact(z[k], a[k], act, slope)
    for k in range(n):
        if abs(d[k]) < tiny:
            d[k] = T(0)
    return value


@njit(**JIT)
def forward_units(x, m, n_in, W, wo, b, lo, hi, zs, Z):
    """Z[s, j] = zs * (x[s, :n_in] . W[wo + j*n_in :][:n_in]) + b[j] for s < m, lo <= j < hi.
    Blocked: two units x five samples per pass over the weights."""
    j = lo
    while j < hi:
        two = j + 1 < hi
        w0 = W[wo + j * n_in: wo + (j + 1) * n_in]
        w1 = W[wo + (j + 1) * n_in: wo + (j + 2) * n_in] if two else w0
        s = 0
        while s + 5 <= m:
            x0, x1, x2, x3, x4 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4]
            p0 = p1 = p2 = p3 = p4 = q0 = q1 = q2 = q3 = q4 = zs - zs
            for i in range(n_in):
                u = w0[i]
                v = w1[i]
                t = x0[i]
                p0 += t * u
                q0 += t * v
                t = x1[i]
                p1 += t * u
                q1 += t * v
                t = x2[i]
                p2 += t * u
                q2 += t * v
                t = x3[i]
                p3 += t * u
                q3 += t * v
                t = x4[i]
                p4 += t * u
                q4 += t * v
            Z[s, j] = p0 * zs + b[j]
            Z[s + 1, j] = p1 * zs + b[j]
            Z[s + 2, j] = p2 * zs + b[j]
            Z[s + 3, j] = p3 * zs + b[j]
            Z[s + 4, j] = p4 * zs + b[j]
            if two:
                Z[s, j + 1] = q0 * zs + b[j + 1]
                Z[s + 1, j + 1] = q1 * zs + b[j + 1]
                Z[s + 2, j + 1] = q2 * zs + b[j + 1]
                Z[s + 3, j + 1] = q3 * zs + b[j + 1]
                Z[s + 4, j + 1] = q4 * zs + b[j + 1]
            s += 5
        while s < m:
            x0 = x[s]
            p0 = q0 = zs - zs
            for i in range(n_in):
                t = x0[i]
                p0 += t * w0[i]
                q0 += t * w1[i]
            Z[s, j] = p0 * zs + b[j]
            if two:
                Z[s, j + 1] = q0 * zs + b[j + 1]
            s += 1
        j += 2


@njit(**JIT)
def accumulate_units(x, m, n_in, P, po, D, lo, hi, cs):
    """P[po + j*n_in + i] += cs * sum_s D[s, j] * x[s, i] for lo <= j < hi (the weight gradient,
    scaled, added straight into the weights or the velocities). Two units x five samples."""
    j = lo
    while j < hi:
        two = j + 1 < hi
        t0 = P[po + j * n_in: po + (j + 1) * n_in]
        t1 = P[po + (j + 1) * n_in: po + (j + 2) * n_in] if two else t0
        s = 0
        while s + 5 <= m:
            x0, x1, x2, x3, x4 = x[s], x[s + 1], x[s + 2], x[s + 3], x[s + 4]
            c0, c1, c2, c3, c4 = cs * D[s, j], cs * D[s + 1, j], cs * D[s + 2, j], cs * D[s + 3, j], cs * D[s + 4, j]
            if two:
                e0, e1, e2, e3, e4 = (cs * D[s, j + 1], cs * D[s + 1, j + 1], cs * D[s + 2, j + 1],
                                      cs * D[s + 3, j + 1], cs * D[s + 4, j + 1])
                for i in range(n_in):
                    a0, a1, a2, a3, a4 = x0[i], x1[i], x2[i], x3[i], x4[i]
                    t0[i] += c0 * a0 + c1 * a1 + c2 * a2 + c3 * a3 + c4 * a4
                    t1[i] += e0 * a0 + e1 * a1 + e2 * a2 + e3 * a3 + e4 * a4
            else:
                for i in range(n_in):
                    t0[i] += c0 * x0[i] + c1 * x1[i] + c2 * x2[i] + c3 * x3[i] + c4 * x4[i]
            s += 5
        while s < m:
            x0 = x[s]
            c0 = cs * D[s, j]
            if two:
                e0 = cs * D[s, j + 1]
                for i in range(n_in):
                    t0[i] += c0 * x0[i]
                    t1[i] += e0 * x0[i]
            else:
                for i in range(n_in):
                    t0[i] += c0 * x0[i]
            s += 1
        j += 2


@njit(**JIT)
def update_layer_units(x, m, n_in, W, VW, wo, b, vb, D, lo, hi, zs, step, mu, decay, frozen_w, frozen_b):
    """One SGD step for units lo:hi of a layer (rows of the transposed W), from the deltas D and
    the inputs x (scaled by zs): u = step*g + decay*w; with momentum v = mu*v - u, w += v,
    else w -= u. Biases: the same without decay."""
    T = W.dtype.type
    if not frozen_w:
        lo_i = wo + lo * n_in
        hi_i = wo + hi * n_in
        if mu > 0:
            for i in range(lo_i, hi_i):
                VW[i] = T(mu) * VW[i] - T(decay) * W[i]
            accumulate_units(x, m, n_in, VW, wo, D, lo, hi, T(-step * zs))
            for i in range(lo_i, hi_i):
                W[i] += VW[i]
        else:
            if decay > 0:
                keep = T(1.0 - decay)
                for i in range(lo_i, hi_i):
                    W[i] *= keep
            accumulate_units(x, m, n_in, W, wo, D, lo, hi, T(-step * zs))
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
def backprop_units(D, m, n_out, W, wo, n_in, lo, hi, Zp, Ap, Dp, code, slope, tiny):
    """Deltas of the layer below, for its units lo:hi: Dp[s, i] = f'(z) * sum_j D[s, j] W[j, i]
    (W transposed: row j holds the n_in weights of unit j). Uses W before its update."""
    T = Dp.dtype.type
    for s in range(m):
        g = Dp[s]
        for i in range(lo, hi):
            g[i] = T(0)
        for j in range(n_out):
            d = D[s, j]
            w = W[wo + j * n_in: wo + (j + 1) * n_in]
            for i in range(lo, hi):
                g[i] += d * w[i]
        z = Zp[s]
        a = Ap[s]
        for i in range(lo, hi):
            v = g[i] * dact(z[i], a[i], code, slope)
            g[i] = v if abs(v) >= tiny else T(0)


@njit(**JIT)
def gather_rows(X, order, start, m, lo, hi, xb):
    """xb[s, :] = X[order[start + s], :] as floats (uint8 stays unscaled) for lo <= s < hi < m."""
    T = xb.dtype.type
    n_in = X.shape[1]
    for s in range(lo, min(hi, m)):
        r = X[order[start + s]]
        o = xb[s]
        for i in range(n_in):
            o[i] = T(r[i])


# --- the fused epoch, one thread, any depth ------------------------------------------------------
@njit(**JIT)
def train_epoch(X, scale, Y, order, bs, W, b, VW, vb, woff, boff, sizes, acts, slopes,
                frozen_w, frozen_b, loss, lr, mu, wd, mean, tiny):
    """One epoch of mini-batch SGD over X[order]; W/b are the flat transposed parameters of all
    layers (modified in place). Returns the summed loss of the epoch (float64)."""
    T = W.dtype.type
    L = acts.shape[0]
    n = order.shape[0]
    n0 = sizes[0]
    maxw = 1
    for l in range(1, L + 1):
        maxw = max(maxw, sizes[l])
    xb = np.empty((bs, n0), W.dtype)
    yb = np.empty((bs, sizes[L]), W.dtype)
    Z = np.empty((L, bs, maxw), W.dtype)
    A = np.empty((L, bs, maxw), W.dtype)
    D = np.empty((L, bs, maxw), W.dtype)
    zs0 = T(scale)
    one = T(1)
    decay = lr * wd
    total = 0.0
    for start in range(0, n, bs):
        m = min(bs, n - start)
        gather_rows(X, order, start, m, 0, m, xb)
        gather_rows(Y, order, start, m, 0, m, yb)
        for l in range(L):
            x = xb if l == 0 else A[l - 1]
            forward_units(x, m, sizes[l], W, woff[l], b[boff[l]:boff[l] + sizes[l + 1]], 0,
                          sizes[l + 1], zs0 if l == 0 else one, Z[l])
            activate_rows(Z[l], A[l], m, 0, sizes[l + 1], acts[l], T(slopes[l]))
        out = L - 1
        for s in range(m):
            total += output_delta_row(Z[out, s], A[out, s], yb[s], D[out, s], sizes[L], acts[out],
                                      T(slopes[out]), loss, T(tiny))
        step = lr / m if mean else lr
        for l in range(L - 1, -1, -1):
            n_in = sizes[l]
            n_out = sizes[l + 1]
            if l > 0:
                backprop_units(D[l], m, n_out, W, woff[l], n_in, 0, n_in, Z[l - 1], A[l - 1],
                               D[l - 1], acts[l - 1], T(slopes[l - 1]), T(tiny))
            x = xb if l == 0 else A[l - 1]
            update_layer_units(x, m, n_in, W, VW, woff[l], b[boff[l]:boff[l] + n_out],
                               vb[boff[l]:boff[l] + n_out], D[l], 0, n_out,
                               scale if l == 0 else 1.0, step, mu, decay, frozen_w[l], frozen_b[l])
    return total


# --- the fused epoch, two threads, two layers ------------------------------------------------------
@njit(**JIT)
def _barrier(flags, t, k):
    """Worker t arrived at barrier k (counted from 1): publish, then wait for the other worker.
    Release/acquire: everything written before the barrier is visible to the other after it."""
    _store_release(flags, t * 16, k)
    o = (1 - t) * 16
    while _load_acquire(flags, o) < k:
        _cpu_relax()


@njit(**JIT)
def train_epoch_2t(t, X, scale, Y, order, bs, W, b, VW, vb, bo, vbo, woff, sizes, acts, slopes,
                   frozen_w, frozen_b, loss, lr, mu, wd, mean, tiny, xb, Z, A, D, P, flags, losses):
    """Worker t (0 or 1) of a two-layer epoch. Worker t owns hidden units split[t]:split[t+1]:
    their rows of W0, their columns of W1, their biases b0. Per batch k:
      gather half of batch k+1's rows into xb[(k+1) % 3]; forward layer 0 for its units;
      partial output sums P[k % 2, t] = its units' share of a0 @ W1; ONE barrier;
      both workers compute the same output layer from P[k%2, 0] + P[k%2, 1] + b1 (b1/vb1 are
      per-worker copies updated identically: bo/vbo rows t), the output delta, then each
      back-propagates into and updates only what it owns.
    Triple-buffered inputs and double-buffered partial sums make the single barrier enough:
    a worker is never more than one barrier ahead of the other."""
    T = W.dtype.type
    n = order.shape[0]
    n0, H, K = sizes[0], sizes[1], sizes[2]
    h = (H + 1) // 2
    lo, hi = (0, h) if t == 0 else (h, H)
    yb = np.empty((bs, K), W.dtype)
    z1 = np.empty((bs, K), W.dtype)
    a1 = np.empty((bs, K), W.dtype)
    d1 = np.empty((bs, K), W.dtype)
    b1 = bo[t]
    vb1 = vbo[t]
    zs0 = T(scale)
    decay = lr * wd
    total = 0.0
    nb = (n + bs - 1) // bs
    for k in range(nb):
        start = k * bs
        m = min(bs, n - start)
        if k + 1 < nb:  # this worker's half of the next batch's rows
            m2 = min(bs, n - start - bs)
            half = (m2 + 1) // 2
            gather_rows(X, order, start + bs, m2, 0 if t == 0 else half, half if t == 0 else m2,
                        xb[(k + 1) % 3])
        x = xb[k % 3]
        Zt, At, Dt = Z, A, D
        forward_units(x, m, n0, W, woff[0], b, lo, hi, zs0, Zt)
        activate_rows(Zt, At, m, lo, hi, acts[0], T(slopes[0]))
        p = P[k % 2, t]
        for s in range(m):  # this worker's share of the output pre-activations
            a = At[s]
            for o in range(K):
                w = W[woff[1] + o * H: woff[1] + (o + 1) * H]
                acc = T(0)
                for j in range(lo, hi):
                    acc += a[j] * w[j]
                p[s, o] = acc
        _barrier(flags, t, k + 1)
        gather_rows(Y, order, start, m, 0, m, yb)
        p0 = P[k % 2, 0]
        p1 = P[k % 2, 1]
        for s in range(m):
            for o in range(K):
                z1[s, o] = p0[s, o] + p1[s, o] + b1[o]
        activate_rows(z1, a1, m, 0, K, acts[1], T(slopes[1]))
        for s in range(m):
            v = output_delta_row(z1[s], a1[s], yb[s], d1[s], K, acts[1], T(slopes[1]), loss, T(tiny))
            total += v
        step = lr / m if mean else lr
        # deltas of this worker's hidden units (with W1 before its update)
        for s in range(m):
            g = Dt[s]
            for j in range(lo, hi):
                g[j] = T(0)
            for o in range(K):
                d = d1[s, o]
                w = W[woff[1] + o * H: woff[1] + (o + 1) * H]
                for j in range(lo, hi):
                    g[j] += d * w[j]
            z = Zt[s]
            a = At[s]
            for j in range(lo, hi):
                v = g[j] * dact(z[j], a[j], acts[0], T(slopes[0]))
                g[j] = v if abs(v) >= tiny else T(0)
        # update this worker's columns of W1 and its copy of b1
        if not frozen_w[1]:
            for o in range(K):
                base = woff[1] + o * H
                for j in range(lo, hi):
                    g = d1[0, o] * A[0, j]
                    for s in range(1, m):
                        g += d1[s, o] * A[s, j]
                    if mu > 0:
                        VW[base + j] = T(mu) * VW[base + j] - (T(step) * g + T(decay) * W[base + j])
                        W[base + j] += VW[base + j]
                    else:
                        W[base + j] -= T(step) * g + T(decay) * W[base + j]
        if not frozen_b[1]:
            for o in range(K):
                g = d1[0, o]
                for s in range(1, m):
                    g += d1[s, o]
                if mu > 0:
                    vb1[o] = T(mu) * vb1[o] - T(step) * g
                    b1[o] += vb1[o]
                else:
                    b1[o] -= T(step) * g
        # update this worker's rows of W0 and entries of b0
        update_layer_units(x, m, n0, W, VW, woff[0], b, vb, Dt, lo, hi, scale, step, mu, decay,
                           frozen_w[0], frozen_b[0])
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
