"""The elementwise math of the Numba kernels, in the network's dtype: the polynomial exp, the
activations and their derivatives (on batch rows: ``activate_rows``, ``activate_full``), and the
output layer's deltas and losses (``output_delta_row``, ``output_delta_flat``, ``output_deltas``).

``exp`` is a polynomial (the pip llvmlite has no SVML, and a library exp keeps the loop scalar);
the sigmoid clamps z first, so exp never overflows. Deltas smaller than ``tiny`` are flushed to
zero in the kernel (no process-wide FTZ/DAZ): saturated sigmoids otherwise produce subnormal
floats, which are slow.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._nb_common import (INLINE, BCE, CANCEL_ACT_1, CANCEL_ACT_2, CANCEL_ACT_3, CANCEL_LOSS_1, CANCEL_LOSS_2, CANCEL_LOSS_3,
                         CLIP32, CLIP64, EXP, IDENTITY, LEAKY_RELU, MSE, POISSON, QUADRATIC, RELU, SIGMOID,
                         SOFTMAX, TANH, for_kernels, separately)
from ._nb_intrinsics import _flat, _i32_as_f32, _i64_as_f64, max2, min2


# --- scalar math -----------------------------------------------------------------------------
@for_kernels
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


@for_kernels
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


@for_kernels
def sigmoid32(z):
    z = min2(max2(z, np.float32(-87.0)), np.float32(87.0))
    return np.float32(1.0) / (np.float32(1.0) + exp32(-z))


@for_kernels
def sigmoid64(z):
    z = min2(max2(z, -700.0), 700.0)
    return 1.0 / (1.0 + exp64(-z))


def sigmoid_like(z, a):
    """The sigmoid of z in the precision of array ``a`` (in compiled code: ``sigmoid32`` for a
    float32 array, else ``sigmoid64``, chosen while typing, so only that one is compiled: a branch
    on ``a.itemsize`` would compile both into every caller)."""
    return sigmoid32(np.float32(z)) if a.dtype == np.float32 else sigmoid64(np.float64(z))


@overload(sigmoid_like, inline="always")
def _sigmoid_like(z, a):
    if a.dtype == types.float32:
        return lambda z, a: sigmoid32(np.float32(z))
    return lambda z, a: sigmoid64(np.float64(z))


@for_kernels
def tanh64(z):
    z = min2(max2(z, -20.0), 20.0)
    return 1.0 - 2.0 / (exp64(2.0 * z) + 1.0)


@njit(**INLINE)
def dact(z, a, code, slope):
    """f'(z) of an elementwise activation, from z and a = f(z), in the dtype of ``a``. (Its one is
    ``a - a`` plus a float32 one: an int literal there made every derivative float64, and the
    float32 loops that use it convert to double and back.)"""
    one = a - a + np.float32(1)
    if code == SIGMOID:
        return a * (one - a)
    if code == TANH:
        return one - a * a
    if code == RELU:
        return one if z > 0 else one - one
    if code == LEAKY_RELU:
        return one if z > 0 else slope
    if code == EXP:
        return a
    return one



# --- layer math on batch rows ------------------------------------------------------------------
@for_kernels
def softmax_row(z, a, lo, hi):
    """a[lo:hi] = softmax(z[lo:hi]) (one sample's row)."""
    T = a.dtype.type
    mx = z[lo]
    for j in range(lo, hi):
        mx = max2(mx, z[j])
    total = 0.0
    for j in range(lo, hi):
        e = exp64(max2(np.float64(z[j] - mx), -700.0))
        a[j] = T(e)
        total += e
    inv = 1.0 / total
    for j in range(lo, hi):
        a[j] = T(a[j] * inv)


@njit(**INLINE)
def activate_rows(Z, A, m, lo, hi, code, slope):
    """A[s, lo:hi] = f(Z[s, lo:hi]) for s < m (softmax over the whole of lo:hi)."""
    T = A.dtype.type
    for s in range(m):
        z = Z[s]
        a = A[s]
        if code == SIGMOID:
            for j in range(lo, hi):
                a[j] = T(sigmoid_like(z[j], A))
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
        elif code == EXP:
            for j in range(lo, hi):
                a[j] = T(np.exp(np.float64(z[j])))
        else:
            softmax_row(z, a, lo, hi)


@separately(constants=("code",), returns=types.none)
def activate_full(Z, A, m, n, code, slope):
    """A[s, :n] = f(Z[s, :n]) for s < m, and zeros in A[s, n:] (the padding, which the next
    layer reads). Elementwise activations run as one flat loop over the m whole rows: one long
    vectorised loop instead of m short ones with scalar tails."""
    T = A.dtype.type
    if code == SOFTMAX:  # (its own row function: the other activations' row loops stay out of this one)
        for s in range(m):
            softmax_row(Z[s], A[s], 0, n)
        return
    width = Z.shape[1]
    z = _flat(Z)
    a = _flat(A)
    count = m * width
    if code == SIGMOID:
        for j in range(count):
            a[j] = T(sigmoid_like(z[j], A))
    elif code == TANH:
        for j in range(count):
            a[j] = T(tanh64(np.float64(z[j])))
    elif code == RELU:
        for j in range(count):
            a[j] = z[j] if z[j] > 0 else T(0)
    elif code == LEAKY_RELU:
        for j in range(count):
            a[j] = z[j] if z[j] > 0 else slope * z[j]
    elif code == EXP:
        for j in range(count):
            a[j] = T(np.exp(np.float64(z[j])))
    else:
        for j in range(count):
            a[j] = z[j]
    # each row's padding zeroed as a slice looped from 0 (a loop from n wrapped every index, as Numba
    # does for one that could be negative, and stayed scalar: 28% of this kernel's time for an output
    # layer of 10 units in rows of 32)
    if n < width:
        for s in range(m):
            pad = A[s, n:]
            for j in range(pad.shape[0]):
                pad[j] = T(0)



# --- output deltas and losses ------------------------------------------------------------------
@separately(constants=("act", "loss"), returns=types.float64)
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
            c = min2(max2(np.float64(a[k]), clip), 1.0 - clip)
            yk = np.float64(y[k])
            value -= yk * math.log(c) + (1.0 - yk) * math.log(1.0 - c)
            d[k] = T((c - yk) / (c * (1.0 - c)))
    elif loss == POISSON:
        for k in range(n):
            c = max2(np.float64(a[k]), clip)
            yk = np.float64(y[k])
            value += (yk * math.log(yk / c) if yk > 0 else 0.0) - yk + c
            d[k] = T(1.0 - yk / c)
    else:
        for k in range(n):
            c = max2(np.float64(a[k]), clip)
            yk = np.float64(y[k])
            value -= yk * math.log(c)
            d[k] = T(-yk / c)
    # each branch flushes the deltas as it computes them (see flushed)
    if (act == CANCEL_ACT_1 and loss == CANCEL_LOSS_1) or (act == CANCEL_ACT_2 and loss == CANCEL_LOSS_2) or (
            act == CANCEL_ACT_3 and loss == CANCEL_LOSS_3):
        for k in range(n):
            d[k] = flushed(a[k] - y[k], tiny)  # the derivative of the activation cancels
    elif act == SOFTMAX:
        dot = d[0] - d[0]
        for k in range(n):
            dot += d[k] * a[k]
        for k in range(n):
            d[k] = flushed(a[k] * (d[k] - dot), tiny)
    elif act == SIGMOID:
        for k in range(n):
            d[k] = flushed(d[k] * (a[k] * (T(1) - a[k])), tiny)
    elif act != IDENTITY:
        for k in range(n):
            d[k] = flushed(d[k] * dact(z[k], a[k], act, slope), tiny)
    else:
        for k in range(n):
            d[k] = flushed(d[k], tiny)
    return value


@njit(**INLINE)
def flushed(v, tiny):
    """v, or zero where |v| < tiny (float32 deltas: below FLUSH32 they only slow the products
    down). Applied where a value is computed: on a value loaded and stored back unchanged, LLVM
    makes it a masked store of the zeros, which AMD's Zen cores run in microcode."""
    return v if abs(v) >= tiny else v - v


@njit(**INLINE)
def flat_delta_covers(act, loss):
    """Whether ``output_delta_flat`` computes this output layer's deltas."""
    return (loss == QUADRATIC or loss == MSE) and act != SOFTMAX


@njit(**INLINE)
def output_delta_flat(Z, A, Yb, D, m, n, act, slope, loss, tiny):
    """The output deltas of samples 0:m at once (quadratic or mse loss, elementwise activation):
    one flat loop over the m padded rows, as ``activate_full`` does; the zero padding of A and Yb
    gives zero deltas there. Same values as ``output_delta_row``; returns the summed loss."""
    T = D.dtype.type
    count = m * D.shape[1]
    z = _flat(Z)
    a = _flat(A)
    y = _flat(Yb)
    d = _flat(D)
    value = 0.0
    c = T(2.0 / n) if loss == MSE else T(1)  # d(mse)/da = 2e/n; d(quadratic)/da = e
    if act == SIGMOID:
        for k in range(count):
            e = a[k] - y[k]
            value += np.float64(e * e)
            d[k] = flushed((e * c) * (a[k] * (T(1) - a[k])), tiny)
    elif act != IDENTITY:
        for k in range(count):
            e = a[k] - y[k]
            value += np.float64(e * e)
            d[k] = flushed((e * c) * dact(z[k], a[k], act, slope), tiny)
    else:
        for k in range(count):
            e = a[k] - y[k]
            value += np.float64(e * e)
            d[k] = flushed(e * c, tiny)
    return value / n if loss == MSE else value * 0.5


@separately(constants=("act", "loss"), returns=types.float64)
def output_deltas(Z, A, Yb, D, m, n, act, slope, loss, tiny):
    """dL/dz of the output layer for samples 0:m into D; returns the summed loss (float64)."""
    if flat_delta_covers(act, loss):
        return output_delta_flat(Z, A, Yb, D, m, n, act, slope, loss, tiny)
    total = 0.0
    for s in range(m):
        total += output_delta_row(Z[s], A[s], Yb[s], D[s], n, act, slope, loss, tiny)
    return total


activate_full_at, output_deltas_at = activate_full.at, output_deltas.at  # (called by address: see separately)
