"""The LLVM intrinsics of the Numba kernels, emitted inline in the calling kernel: the bit casts
of the polynomial exp (an integer's bits as a float: 2**n), the acquire/release atomics of the
stop flag and the two-thread barrier, a prefetch hint (the next batch's rows), and x86's
``pause`` and libc's ``sched_yield`` for the barrier's spin loop."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


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


# --- the sparse first layer's two loops, on whole 128-byte row segments ---------------------------
# Written as LLVM vector code because Numba's loops over a row segment kept the accumulator in
# memory (a store-to-load chain per nonzero, 3x slower). A segment is LANES[dtype] elements: 128
# bytes, one row of the input-major weights of a layer of up to 32 float32 (16 float64) units, or
# one of its 128-byte pieces; LLVM splits the vector into the machine's registers.

def _lanes(dtype):
    return 128 // (dtype.bitwidth // 8)


def _data(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, ary).data


def _vector_tools(context, builder, elty):
    """(vector type, splat(x), fma(a, b, c), load(ptr), store(v, ptr)) for 128-byte vectors of elty."""
    elt = context.get_value_type(elty)
    n = _lanes(elty)
    vec = ir.VectorType(elt, n)
    undef = ir.Constant(vec, ir.Undefined)
    zero_mask = ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec, vec, vec]),
                                         f"llvm.fma.v{n}f{elty.bitwidth}")
    align = elty.bitwidth // 8

    def splat(x):
        return builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0)), undef,
                                      zero_mask)

    def load(ptr):
        return builder.load(builder.bitcast(ptr, vec.as_pointer()), align=align)

    def store(v, ptr):
        builder.store(v, builder.bitcast(ptr, vec.as_pointer()), align=align)

    return vec, splat, lambda a, b, c: builder.call(fma, [a, b, c]), load, store


def _nonzero(context, builder, sig, args, p):
    """(row index as int64, value as the weights' dtype) of entry p of (indices, values); with
    indices None, the row is p itself (a dense product)."""
    Wt, It, Vt = sig.args[:3]
    vp = _data(context, builder, Vt, args[2])
    if isinstance(It, types.NoneType):
        i = p
    else:
        i = context.cast(builder, builder.load(builder.gep(_data(context, builder, It, args[1]), [p])), It.dtype,
                         types.int64)
    v = context.cast(builder, builder.load(builder.gep(vp, [p])), Vt.dtype, Wt.dtype)
    return i, v


@intrinsic
def _rows_dot(typingctx, W, indices, values, p0, p1, wo, ld, z, zo):
    """``z[zo:zo + n] = sum over p0 <= p < p1 of values[p] * W[wo + indices[p]*ld :][:n]``, n the
    128-byte lane count: the forward product of one sample's nonzeros with the input-major
    weights (row i: the weights from input i). ``indices`` None: row p (a dense combination of
    rows, as in back-propagating deltas). Two accumulators, so consecutive FMAs do not wait for
    each other."""
    i64 = types.int64
    sig = types.void(W, indices, values, i64, i64, i64, i64, z, i64)

    def codegen(context, builder, sig, args):
        _, _, _, p0, p1, wo, ld, zz, zo = args
        vec, splat, fma, load, store = _vector_tools(context, builder, sig.args[0].dtype)
        wp = _data(context, builder, sig.args[0], args[0])
        one, two = ir.Constant(ir.IntType(64), 1), ir.Constant(ir.IntType(64), 2)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(vec, None)) for _ in range(2)]

        def add(p, acc):
            i, v = _nonzero(context, builder, sig, args, p)
            row = load(builder.gep(wp, [builder.add(wo, builder.mul(i, ld))]))
            builder.store(fma(splat(v), row, builder.load(acc)), acc)

        pairs = builder.sdiv(builder.sub(p1, p0), two)
        with cgutils.for_range(builder, pairs) as loop:
            p = builder.add(p0, builder.mul(loop.index, two))
            add(p, accs[0])
            add(builder.add(p, one), accs[1])
        with cgutils.for_range_slice(builder, builder.add(p0, builder.mul(pairs, two)), p1, one, inc=True) as (p, _):
            add(p, accs[0])
        out = builder.gep(_data(context, builder, sig.args[7], zz), [zo])
        store(builder.fadd(builder.load(accs[0]), builder.load(accs[1])), out)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _rows_axpy(typingctx, G, indices, values, p0, p1, go, ld, c, d, do):
    """``G[go + indices[p]*ld :][:n] += (c * values[p]) * d[do:do + n]`` for p0 <= p < p1, n the
    128-byte lane count: one sample's share of the input-major weight gradient, added into the
    rows of its nonzeros."""
    i64 = types.int64
    sig = types.void(G, indices, values, i64, i64, i64, i64, G.dtype, d, i64)

    def codegen(context, builder, sig, args):
        _, _, _, p0, p1, go, ld, c, dd, do = args
        vec, splat, fma, load, store = _vector_tools(context, builder, sig.args[0].dtype)
        gp = _data(context, builder, sig.args[0], args[0])
        cd = builder.fmul(splat(c), load(builder.gep(_data(context, builder, sig.args[8], dd), [do])))
        with cgutils.for_range_slice(builder, p0, p1, ir.Constant(ir.IntType(64), 1), inc=True) as (p, _):
            i, v = _nonzero(context, builder, sig, args, p)
            row = builder.gep(gp, [builder.add(go, builder.mul(i, ld))])
            store(fma(splat(v), cd, load(row)), row)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _gemm(typingctx, ta, tb, m, n, k, alpha, A, ao, lda, B, bo, ldb, beta, C, co, ldc):
    """BLAS's gemm, column-major: C = alpha * op(A) op(B) + beta * C (op: 'n' as is, 't'
    transposed), m x n from k, where A, B, C start ``ao``, ``bo``, ``co`` elements into the data
    of arrays of one float dtype (any shape: only their data pointers are used). Calls Numba's
    own helper (``numba_xxgemm``, which finds scipy's BLAS when first called): a symbol, so the
    compiled kernel stays cacheable."""
    def codegen(context, builder, sig, args):
        ta, tb, m, n, k, alpha, A, ao, lda, B, bo, ldb, beta, C, co, ldc = args
        dtype = sig.args[6].dtype
        i8 = ir.IntType(8)
        vp = i8.as_pointer()
        ip = context.get_value_type(types.intp)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [i8, i8, i8, ip, ip, ip, vp, vp, ip, vp, ip, vp, vp, ip]),
            "numba_xxgemm")

        def data(index, off):
            ary = context.make_array(sig.args[index])(context, builder, args[index])
            return builder.bitcast(builder.gep(ary.data, [off]), vp)

        def scalar(index):
            slot = cgutils.alloca_once(builder, context.get_value_type(dtype))
            builder.store(context.cast(builder, args[index], sig.args[index], dtype), slot)
            return builder.bitcast(slot, vp)

        kind = i8(ord("s") if dtype == types.float32 else ord("d"))
        builder.call(fn, [kind, builder.trunc(ta, i8), builder.trunc(tb, i8), m, n, k, scalar(5), data(6, ao), lda,
                          data(9, bo), ldb, scalar(12), data(13, co), ldc])
        return context.get_dummy_value()
    if not (isinstance(A, types.Array) and A.dtype in (types.float32, types.float64) and B.dtype == A.dtype
            and C.dtype == A.dtype):
        return None
    ip = types.intp
    return types.void(ip, ip, ip, ip, ip, alpha, A, ip, ip, B, ip, ip, beta, C, ip, ip), codegen
