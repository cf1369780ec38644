"""The LLVM intrinsics of the Numba kernels, emitted inline in the calling kernel: the bit casts
of the polynomial exp (an integer's bits as a float: 2**n), a flat view of contiguous rows, the
acquire/release atomics of the stop flag and the two-thread barrier, a prefetch hint (the next
batch's rows), x86's ``pause`` and libc's ``sched_yield`` for the barrier's spin loop, the vector
loops of the sparse first layer and of the dense blocked products, BLAS's gemm, ``min2``/``max2``
(the kernels' min and max of two numbers) and ``_rows`` (a view of rows lo:hi)."""
from __future__ import annotations

import contextlib
import operator

from llvmlite import ir
from numba import types
from numba.core.typing import signature
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic


def _pick(cmp):
    """An intrinsic of two numbers: the second where ``cmp(second, first)``, else the first, in
    their common type (Python's min and max of two, NaN included). Numba's own min and max are
    overloads, a function compiled apart for each pair of argument types (30-80 ms each, six in a
    first fit); this one is a compare and a select in the caller."""
    @intrinsic
    def pick(typingctx, a, b):
        if not all(isinstance(t, (types.Integer, types.Float, types.Boolean)) for t in (a, b)):
            raise TypingError(f"expected two numbers, got {a} and {b}")
        ty = typingctx.unify_types(a, b)
        if ty is None:
            raise TypingError(f"{a} and {b} have no common type")

        def codegen(context, builder, sig, args):
            x, y = (context.cast(builder, v, t, ty) for v, t in zip(args, sig.args))
            pred = context.get_function(cmp, signature(types.boolean, ty, ty))(builder, (y, x))
            return builder.select(pred, y, x)
        return ty(a, b), codegen
    return pick


min2, max2 = _pick(operator.lt), _pick(operator.gt)


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
def _flat(typingctx, a):
    """A view of array ``a``'s elements as one 1-D C array, for an array whose elements lie
    contiguously in memory, row after row (every caller's: the epochs' buffers and slices of
    their leading axis). Not Numba's ``reshape``: that calls a C helper on each use, and a
    cached kernel that uses it imports Numba's ``numba.np.arrayobj`` when it loads (30-60 ms of
    a new process's 0.15 s, for one helper of reshape's). Only for arrays Numba types as
    C-contiguous (the epochs' buffers and those slices are): any other layout is refused while
    typing, for the view would read elements outside the array. The view keeps the array's
    read-only and alignment flags."""
    if not isinstance(a, types.Array) or a.layout != "C":
        raise TypingError(f"_flat: expected a C-contiguous array, got {a}")
    flat = a.copy(ndim=1, layout="C")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        out = context.make_array(flat)(context, builder)
        size = context.get_constant(types.intp, 1)
        for extent in cgutils.unpack_tuple(builder, src.shape, sig.args[0].ndim):
            size = builder.mul(size, extent)
        out.meminfo, out.parent, out.data, out.itemsize = src.meminfo, src.parent, src.data, src.itemsize
        out.nitems = size
        out.shape = cgutils.pack_array(builder, [size])
        out.strides = cgutils.pack_array(builder, [src.itemsize])
        return impl_ret_borrowed(context, builder, flat, out._getvalue())
    return flat(a), codegen


@intrinsic
def _rows(typingctx, a, lo, hi):
    """``a[lo:hi]``, rows lo to hi of a C-contiguous array (a view: its own type, shape, strides),
    for 0 <= lo <= hi <= len(a), which the caller guarantees (not checked). Not Numba's slice:
    each of those builds a slice object, then clamps and wraps its ends, code to type and lower
    for every view (``_nb_epoch.layers_above`` takes twenty)."""
    if not isinstance(a, types.Array) or a.layout != "C" or not all(isinstance(t, types.Integer) for t in (lo, hi)):
        raise TypingError(f"_rows: expected a C-contiguous array and two ints, got {a}, {lo}, {hi}")

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        src = context.make_array(aryty)(context, builder, args[0])
        first, last = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:]))
        shape = cgutils.unpack_tuple(builder, src.shape, aryty.ndim)
        strides = cgutils.unpack_tuple(builder, src.strides, aryty.ndim)
        out = context.make_array(aryty)(context, builder)
        context.populate_array(out, data=cgutils.pointer_add(builder, src.data, builder.mul(first, strides[0])),
                               shape=cgutils.pack_array(builder, [builder.sub(last, first)] + shape[1:]),
                               strides=src.strides, itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, aryty, out._getvalue())
    return a(a, lo, hi), codegen


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

def _data(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, ary).data


def _vector_tools(context, builder, elty, nbytes=128):
    """(vector type, splat(x), fma(a, b, c), load(ptr), store(v, ptr)) for vectors of elty of
    ``nbytes`` bytes (128: a row segment; REGISTER_BYTES: one register)."""
    elt = context.get_value_type(elty)
    n = nbytes // (elty.bitwidth // 8)
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


# --- the dense blocked products' inner loops (``_nb_blocked.py``) ----------------------------------
# A block is U units x S samples, U and S literal ints: its U*S sums are kept in vector registers of
# the machine's width over the row (ld elements, a multiple of the 128-byte lane count), reduced
# once at the end. Written as vector code rather than Numba loops: LLVM then has no loop to
# vectorise (no remainder loops, no run-time checks), a kernel compiles in a fraction of the time,
# and each (unit, sample) sum is the same whatever block computed it.

def register_bytes(features):
    """The width of the vector registers of an LLVM feature string ("+avx2,-avx512f,..."): 64
    bytes with AVX-512, 32 with AVX, else 16 (SSE)."""
    enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
    return 64 if "avx512f" in enabled else 32 if "avx" in enabled else 16


def _target_features():
    """The CPU features Numba compiles for: ``NUMBA_CPU_FEATURES`` when set, else the host's."""
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features
    return config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()


REGISTER_BYTES = register_bytes(_target_features())
REGISTERS = 32 if REGISTER_BYTES == 64 else 16  # vector registers (x86-64: AVX-512, or AVX2 and SSE)


def _literal_int(value, what):
    if not isinstance(value, types.IntegerLiteral):
        raise TypingError(f"{what} must be a literal int (a block's shape is fixed at compile time)")
    return value.literal_value


def _item(context, builder, aryty, ary, *index):
    return cgutils.get_item_pointer(context, builder, aryty, context.make_array(aryty)(context, builder, ary),
                                    list(index))


def _block_rows(context, builder, sig, args, s, count, flat, offset, ld, units):
    """Pointers to the block's rows: samples s..s+count of x (the first argument, 2-D), and the
    rows ``offset + u*ld`` (u < units) of the flat array at argument ``flat``."""
    i64 = ir.IntType(64)
    xrows = [_item(context, builder, sig.args[0], args[0], builder.add(s, i64(q)), i64(0)) for q in range(count)]
    base = _data(context, builder, sig.args[flat], args[flat])
    return xrows, [builder.gep(base, [builder.add(offset, builder.mul(ld, i64(u)))]) for u in range(units)]


@contextlib.contextmanager
def _register_steps(builder, ld, n):
    """A loop over a row of ``ld`` elements in steps of one register of ``n`` lanes (ld a multiple
    of n); yields at(ptr): the pointer to ptr's element at the current step."""
    i64 = ir.IntType(64)
    with cgutils.for_range(builder, builder.sdiv(ld, i64(n))) as loop:
        i = builder.mul(loop.index, i64(n))
        yield lambda ptr: builder.gep(ptr, [i])


@intrinsic
def _dot_block(typingctx, x, s, ld, W, wo, zs, b, Z, j, U, S):
    """``Z[s + q, j + u] = zs * (x[s + q, :ld] . W[wo + u*ld :][:ld]) + b[j + u]`` for u < U, q < S:
    the forward product of U units (W's rows, transposed layout) and S samples (x's rows)."""
    nu, ns = _literal_int(U, "U"), _literal_int(S, "S")
    sig = types.void(x, s, ld, W, wo, zs, b, Z, j, U, S)

    def codegen(context, builder, sig, args):
        x_, s_, ld_, W_, wo_, zs_, b_, Z_, j_ = args[:9]
        elty = sig.args[3].dtype
        vec, _, fma, load, _ = _vector_tools(context, builder, elty, REGISTER_BYTES)
        i64 = ir.IntType(64)
        xrows, wrows = _block_rows(context, builder, sig, args, s_, ns, 3, wo_, ld_, nu)
        accs = [[cgutils.alloca_once_value(builder, ir.Constant(vec, None)) for _ in range(nu)] for _ in range(ns)]
        with _register_steps(builder, ld_, vec.count) as at:
            w = [load(at(wrows[u])) for u in range(nu)]
            for q in range(ns):
                xv = load(at(xrows[q]))
                for u in range(nu):
                    builder.store(fma(xv, w[u], builder.load(accs[q][u])), accs[q][u])
        elt = context.get_value_type(elty)
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(elt, [elt, vec]),
                                                f"llvm.vector.reduce.fadd.v{vec.count}f{elty.bitwidth}")
        scale = context.cast(builder, zs_, sig.args[5], elty)
        for u in range(nu):
            ju = builder.add(j_, i64(u))
            bias = builder.load(_item(context, builder, sig.args[6], b_, ju))
            for q in range(ns):
                total = builder.call(reduce, [ir.Constant(elt, 0.0), builder.load(accs[q][u])],
                                     fastmath=("reassoc", "nsz"))
                builder.store(builder.fadd(builder.fmul(total, scale), bias),
                              _item(context, builder, sig.args[7], Z_, builder.add(s_, i64(q)), ju))
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _axpy_block(typingctx, x, s, ld, P, po, D, j, cs, U, S):
    """``P[po + u*ld + i] += sum over q < S of (cs * D[s + q, j + u]) * x[s + q, i]`` for u < U,
    i < ld: the weight gradient of U units from S samples, added into P's rows (the weights or
    the optimiser's state, transposed layout), the samples' terms added in order."""
    nu, ns = _literal_int(U, "U"), _literal_int(S, "S")
    sig = types.void(x, s, ld, P, po, D, j, cs, U, S)

    def codegen(context, builder, sig, args):
        x_, s_, ld_, P_, po_, D_, j_, cs_ = args[:8]
        elty = sig.args[3].dtype
        vec, splat, fma, load, store = _vector_tools(context, builder, elty, REGISTER_BYTES)
        i64 = ir.IntType(64)
        scale = context.cast(builder, cs_, sig.args[7], elty)

        def coefficient(q, u):
            d = builder.load(_item(context, builder, sig.args[5], D_, builder.add(s_, i64(q)), builder.add(j_, i64(u))))
            return splat(builder.fmul(scale, d))

        c = [[coefficient(q, u) for u in range(nu)] for q in range(ns)]
        xrows, prows = _block_rows(context, builder, sig, args, s_, ns, 3, po_, ld_, nu)
        with _register_steps(builder, ld_, vec.count) as at:
            xv = [load(at(xrows[q])) for q in range(ns)]
            for u in range(nu):
                t = load(at(prows[u]))
                for q in range(ns):
                    t = fma(c[q][u], xv[q], t)
                store(t, at(prows[u]))
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
