"""The Numba backend: the NumPy reference's maths, compiled for the CPU.

Training runs one compiled call per epoch (``train_epoch``): the whole mini-batch loop (gather
by the shuffled order, uint8 scaled on the fly, forward, deltas, gradients, SGD update) inside
one ``@njit`` function, for any depth, every activation and loss, momentum, weight decay, frozen
parameters and both reductions. It works on a training plan (``kernels/plan.py``, made once per
``fit`` by ``make_plan``): the parameters of K >= 1 networks packed along a model axis, each
member trained by that one-network epoch (``train_plan``; engines ``numba-fused-1t``,
``numba-fused-2t``, ``numba-members-Nt``). The kernels are in the ``_nb_*.py`` modules, one per job
(``_nb_common.py`` lists them), compiled with ``cache=True``: a new process loads them from disk
instead of compiling.

What is compiled and what is not, honestly: ``train_epoch`` is entirely compiled, and on batches
of 64 samples or more calls BLAS's gemm (scipy's, on one thread per worker) for the products of
layers of 64 units or more (256 in float32 on AVX-512: ``_nb_blocked.gemm_pays``); of the
per-batch methods (the generic path, used by ``Network.train_batch``, ``gradients`` and
inference) the activations, output deltas, losses and SGD updates are compiled, the matrix
products are NumPy's (BLAS): ``forward`` on 64 rows or more (evaluation, prediction) holds BLAS to
the calling thread, since OpenBLAS's own threads busy-wait for a while after each threaded product
and would take the cores from the next two-thread epoch's workers.

Threads: ``threads=1`` (the default) or more. An ensemble (a plan of K members, ``fb.Ensemble``)
runs on min(threads, K) workers, each training whole members (no barrier between them). For one
network, ``threads >= 2`` uses two workers: the epoch of a network of two or more
layers runs on two persistent workers (two Python threads, each inside a ``nogil`` compiled
function for the whole epoch): each owns about half the units of the first (big) layer and does
its forward pass and update; worker 0 alone does the small layers above in between, while
worker 1 gathers the next batch. Two spin barriers per batch, built on acquire/release atomics,
separate the phases (see ``train_epoch_2t``); after a few thousand polls a waiting worker yields
its core. One-layer networks (and machines other than x86-64 Linux/macOS) use one thread.
Spinning wastes a core when the machine is oversubscribed, hence the default of one thread.

Interrupts: the fused epoch (one thread or two) runs on worker threads while the calling thread
waits (``run_workers``), so Ctrl-C is answered at once (an epoch of a few milliseconds, once
compiled, runs on the calling thread: see ``train_plan``): the workers poll a stop flag before each
batch and in the barriers, the epoch's work (done on the plan's copies of the parameters) is
discarded, and the layers keep the weights they had before the epoch. An interrupted first
compile returns at once too; the compile itself cannot be stopped and finishes, and is cached,
on its worker thread.

Environment: nothing process-wide is changed. Numba's cache lives in ``__pycache__`` beside the
kernels (or ``NUMBA_CACHE_DIR``); ``NumbaBackend.info()`` reports versions, the CPU name and
features Numba compiles for, and whether ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` are set. A first
compile of an epoch, on two CPUs or more, has a helper process compile half of it into that cache
(``compile_ahead.py``; ``FASTBP_COMPILE_AHEAD=0``: not).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import platform
import queue
import signal
import sys
import threading
import time

import numpy as np

from .base import Backend, Engine
from .numpy_backend import NumpyBackend

import numba  # noqa: E402  (ImportError here makes the registry report the backend unavailable)
from numba.core.compiler_lock import global_compiler_lock  # noqa: E402

from . import _nb_batch as KB  # noqa: E402  (the per-batch kernels)
from . import _nb_blocked as KP  # noqa: E402  (the blocked products: which of them BLAS computes)
from . import _nb_common as KC  # noqa: E402  (the op codes the kernels take)
from . import _nb_epoch as KF  # noqa: E402  (the fused epochs)
from . import _nb_optim as KO  # noqa: E402  (the optimisers' update rules)
from . import _nb_sparse as KS  # noqa: E402  (the fused epoch with a sparse first layer)
from . import compile_ahead  # noqa: E402  (a first compile on two cores)
from .plan import aligned_zeros as _aligned_zeros  # noqa: E402
from .plan import build_plan, refill  # noqa: E402
from .sparse import density, is_sparse  # noqa: E402

# the two-thread kernel's barrier uses x86's pause instruction and libc's sched_yield
TWO_THREADS_SUPPORTED = platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"
_ONE_THREAD_PRODUCT_ROWS = 64  # forward(): from this many rows on, BLAS on one thread
_COMPILE_PATIENCE = 0.25  # seconds an interrupted warmup waits for its worker (a compile cannot be stopped)
_FLUSH = {np.dtype(np.float32): KC.FLUSH32, np.dtype(np.float64): KC.FLUSH64}  # deltas below: zero
# sparse="auto" trains with the sparse first layer when at most this fraction of the training
# inputs is nonzero (scipy.sparse input: always). Measured: see the README's sparse table.
SPARSE_DENSITY = 0.30


def _interrupt_as_such(method):
    """A per-batch kernel call that Ctrl-C interrupts raises KeyboardInterrupt. (Numba's wrapper
    can let the signal's exception be set while it returns a result, which Python reports as
    ``SystemError: CPUDispatcher(...) returned a result with an exception set``, the
    KeyboardInterrupt as its cause.)"""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except SystemError as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise
    return call


def _check_threads(threads):
    if threads is None:
        return 1
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads: expected a positive integer, got {threads!r}")
    if threads < 1:
        raise ValueError(f"threads: expected a positive integer, got {threads}")
    return int(threads)


class NumbaBackend(NumpyBackend):
    """CPU backend compiled with Numba. ``threads``: 1 (default) or more (see the module doc);
    ``fused``: False disables the one-call-per-epoch kernel (the per-batch kernels are used);
    ``sparse``: the fused engines' first layer runs over each sample's nonzero inputs only
    (True), densely (False), or sparsely when at most ``SPARSE_DENSITY`` of the training inputs
    are nonzero or they are scipy.sparse ("auto", the default)."""

    name = "numba"

    def __init__(self, dtype="float32", threads=None, fused=True, sparse="auto"):
        Backend.__init__(self, dtype)
        self.threads = _check_threads(threads)
        self.fused = bool(fused)
        if not (sparse is True or sparse is False or sparse == "auto"):
            raise ValueError(f"sparse: expected 'auto', True or False, got {sparse!r}")
        self.sparse = sparse
        self._T = self.dtype.type

    def __repr__(self):
        extra = "" if self.sparse == "auto" else f", sparse={self.sparse}"
        return f"NumbaBackend(dtype={self.dtype.name!r}, threads={self.threads}{extra})"

    @staticmethod
    def is_available():
        return True  # this module imported numba

    @staticmethod
    def info():
        """Versions, and the CPU target Numba compiles for."""
        import llvmlite.binding as llvm

        return {
            "numba": numba.__version__,
            "llvmlite": __import__("llvmlite").__version__,
            "cpu_name": llvm.get_host_cpu_name(),
            "avx512f": "+avx512f" in llvm.get_host_cpu_features().flatten(),
            "NUMBA_CPU_NAME": os.environ.get("NUMBA_CPU_NAME"),
            "NUMBA_CPU_FEATURES": os.environ.get("NUMBA_CPU_FEATURES"),
            "two_threads_supported": TWO_THREADS_SUPPORTED,
            "first_compile": compile_ahead.status(),
            **kernel_cache(),
        }

    # --- per-batch kernels (NumPy's products, compiled elementwise work) ---------------------
    def _slope(self, activation):
        return self._T(activation.slope)

    @_interrupt_as_such
    def forward(self, x, W, b, activation):
        if is_sparse(x):  # a batch of scipy.sparse rows: scipy's product, no densifying
            z = np.asarray(x @ W, dtype=self.dtype) + b
        elif x.ndim == 2 and x.shape[0] >= _ONE_THREAD_PRODUCT_ROWS:
            # large batches (evaluation, prediction): BLAS on this thread alone. OpenBLAS's
            # threads busy-wait for a while after each threaded product, and would take the
            # cores from the two-thread epoch that follows. (Not the fused epochs' blocked
            # product: compiling it made a new network's first predict several seconds slower.)
            with one_blas_thread(True, scipy=False):
                z = np.asarray(x @ W, dtype=self.dtype) + b
        else:
            z = x @ W + b
        code = KC.ACT_CODES[activation.name]
        z = np.ascontiguousarray(z)
        a = np.empty_like(z)
        _for(KB.activate, nrt=False, code=code)(z, a, code, self._slope(activation))
        return z, a

    @_interrupt_as_such
    def activation_backward(self, g, z, a, activation):
        code = KC.ACT_CODES[activation.name]
        return _for(KB.activation_backward, code=code)(np.ascontiguousarray(g), z, a, code, self._slope(activation))

    @_interrupt_as_such
    def output_delta(self, z, a, y, activation, loss):
        code, lcode = KC.ACT_CODES[activation.name], KC.LOSS_CODES[loss]
        d, _ = _for(KB.output_delta, code=code, loss=lcode)(z, a, np.ascontiguousarray(y, dtype=self.dtype), code,
                                                             self._slope(activation), lcode)
        return d

    @_interrupt_as_such
    def loss(self, a, y, loss):
        # the loss needs no z or activation: run output_delta with the identity and take the value
        lcode = KC.LOSS_CODES[loss]
        _, total = _for(KB.output_delta, code=KC.IDENTITY, loss=lcode)(a, a, np.ascontiguousarray(y, dtype=self.dtype),
                                                                       KC.IDENTITY, self._T(0), lcode)
        return float(total)

    @_interrupt_as_such
    def update(self, p, g, state, opt, hp, scale, decayed):
        hp = np.ascontiguousarray(hp, dtype=np.float64)
        self._check_update(p, g, state, opt, hp)  # the compiled loop trusts the sizes
        if not (p.flags.c_contiguous and (state is None or state.flags.c_contiguous)):
            return NumpyBackend.update(self, p, g, state, opt, hp, scale, decayed)  # in place on any layout
        S = np.zeros((1, 1), self.dtype) if state is None else state.reshape(state.shape[0], -1)
        _for(KO.update, opt=int(opt))(int(opt), hp, p.reshape(-1), S,
                                      np.ascontiguousarray(g, dtype=self.dtype).reshape(-1), float(scale), bool(decayed))

    # --- the fused epochs, on a training plan (kernels/plan.py) -------------------------------
    def covers(self, layers, loss, X, Y):
        """Whether the fused engines train this configuration (else the per-batch path)."""
        if not self.fused or loss not in KC.LOSS_CODES or X.ndim != 2 or Y.ndim != 2:
            return False
        if X.dtype not in (np.uint8, self.dtype) or Y.dtype != self.dtype:
            return False
        return all(layer.activation.name in KC.ACT_CODES and isinstance(p, np.ndarray) and p.dtype == self.dtype
                   for layer in layers for p in (layer.W, layer.b))

    def make_plan(self, networks, loss, optimizers, X, Y, batch_size=None, sparse=None):
        """The training plan of ``networks`` (one list of layers per member, all of one shape),
        or None when the fused engines do not cover them. With a sparse first layer (see
        ``sparse``; the argument, when given, overrides the backend's choice) it holds the
        nonzeros of X, made here: once per fit."""
        if not self._covers_all(networks, loss, X, Y):
            return None
        if self.use_sparse(X) if sparse is None else sparse:
            inputs = KS.sparse_rows(X, self.dtype)
        elif is_sparse(X):  # the dense engines read a dense copy
            inputs = np.ascontiguousarray(X.toarray(), dtype=np.uint8 if X.dtype == np.uint8 else self.dtype)
        else:
            inputs = None
        return build_plan(networks, loss, optimizers, self.dtype, _FLUSH[self.dtype], inputs)

    def remake_plan(self, plan, networks, loss, optimizers, X, Y, batch_size=None):
        """As the base class says: the inputs ``plan`` holds (the nonzero rows, a dense copy, or
        none) serve again, so the data is neither scanned nor converted once more."""
        if not self._covers_all(networks, loss, X, Y):
            return None
        return (refill(plan, networks, loss, optimizers)
                or build_plan(networks, loss, optimizers, self.dtype, _FLUSH[self.dtype], plan.inputs))

    def _covers_all(self, networks, loss, X, Y):
        return all(self.covers(layers, loss, X, Y) for layers in networks)

    def use_sparse(self, X, scan=True):
        """Whether a fit on X trains with the sparse first layer ("auto": from the density of up
        to 4,096 rows spread over X). ``scan=False`` (an epoch outside a fit, a plan per call):
        "auto" does not measure dense X's density, and keeps it dense."""
        if self.sparse == "auto":
            return is_sparse(X) or (scan and density(X, max_rows=4096) <= SPARSE_DENSITY)
        return self.sparse

    def engines(self):
        """``numba-members-Nt`` (K > 1 members on N = min(threads, K) workers, each owning whole
        members), ``numba-fused-2t`` (one network, two workers splitting the first layer),
        ``numba-fused-1t`` (one network, one thread), ``numba-per-batch``."""
        def members(n, sparse):
            return lambda plan: (plan is not None and plan.input_major == sparse and plan.n_members > 1
                                 and min(self.threads, plan.n_members) == n)

        def one(sparse, two):
            return lambda plan: (plan is not None and plan.input_major == sparse and plan.n_members == 1
                                 and (not two or self._two_threads(plan)))

        return tuple(e for sparse, kind in ((True, "sparse"), (False, "fused")) for e in (
            *(Engine(f"numba-{'sparse-' if sparse else ''}members-{n}t", members(n, sparse))
              for n in range(1, self.threads + 1)),
            Engine(f"numba-{kind}-2t", one(sparse, True)),
            Engine(f"numba-{kind}-1t", one(sparse, False)))) + NumpyBackend.engines(self)

    def _two_threads(self, plan):
        return (self.threads >= 2 and TWO_THREADS_SUPPORTED and plan.n_layers >= 2 and plan.sizes[1] >= 2)

    def train_epoch(self, layers, loss, X, scale, Y, order, batch_size, opt):
        """One epoch outside a fit (``Network.run_epoch``, the book's compat loop): a plan per
        call, so the first layer is sparse only for scipy.sparse X or ``sparse=True`` (which then
        collects X's nonzeros on every call); "auto" does not scan dense X each epoch."""
        plan = self.make_plan([layers], loss, [opt], X, Y, sparse=self.use_sparse(X, scan=False))
        if plan is None:
            return None
        totals = self.train_plan(plan, X, scale, Y, np.ascontiguousarray(order, dtype=np.int64)[None, :],
                                 batch_size)
        plan.unpack([layers])
        return float(totals[0])

    def train_plan(self, plan, X, scale, Y, orders, batch_size, members=None, patience=None):
        """One epoch of the plan's ``members`` (default all), member k over ``X[orders[k]]``, on
        worker threads while this thread waits, so that Ctrl-C is answered at once: the workers
        are told to stop (they poll a flag before each batch) and the exception goes on; the
        plan then holds a mixture (``Plan.restore`` puts back a snapshot). One member on
        ``threads >= 2``: the two-thread kernel; several: each worker runs whole members. An
        epoch for one worker of at most ``INLINE_FLOPS`` whose kernel is compiled already runs on
        this thread instead (milliseconds: an interrupt is answered when it ends; starting a
        thread would cost more than the maths). Returns the summed loss per member (NaN for
        those not run)."""
        K_ = plan.n_members
        members = np.arange(K_, dtype=np.int64) if members is None else np.asarray(members, dtype=np.int64)
        totals = np.full(K_, np.nan)
        if members.size == 0:
            return totals
        orders = np.ascontiguousarray(orders, dtype=np.int64)
        bs = int(min(batch_size, orders.shape[1]))
        scale = float(scale)
        stop = _aligned_zeros(16, np.int64)
        finish_left_running(stop, patience)
        p = plan
        # layers whose products are BLAS's (a sparse first layer never is)
        gemm = any(KP.gemm_pays(bs, int(n), np.dtype(self.dtype).itemsize) for n in p.sizes[2 if p.input_major else 1:])
        X = X if p.inputs is None else p.inputs
        data = (X.indptr, X.indices, X.values) if p.input_major else (X,)
        shared = (p.woff, p.boff, p.sizes, p.lds, p.acts, p.slopes)
        dt, L, maxw = self.dtype, p.n_layers, int(max(p.lds[1:]))
        if K_ == 1 and self._two_threads(p):
            def two_workers():  # rows of 128-byte multiples, cache-line aligned; the barriers' flags
                ZAD = [_aligned_zeros((L, bs, maxw), dt) for _ in range(3)]
                if p.input_major:  # the partial sums, the spans of each worker's nonzeros, its targets
                    return (*ZAD, _aligned_zeros((2, bs, int(p.lds[1])), dt), np.zeros((2, 2, bs), np.int64),
                            _aligned_zeros((2, bs, maxw), dt), _aligned_zeros(32, np.int64))
                return (*ZAD, _aligned_zeros((2, 2, bs, int(p.lds[0])), dt), _aligned_zeros((2, bs, maxw), dt),
                        _aligned_zeros(32, np.int64))  # (each worker's two batch buffers)

            *bufs, flags = p.scratch(("2t", bs, dt), two_workers)
            flags[:] = 0  # (the barriers count from 1 in each epoch)
            Z, A, D, *more = bufs
            losses = np.zeros(2)
            fns = np.zeros(KF.N_SLOTS, np.int64)
            common = (scale, Y, orders[0], bs, p.W[0], p.b[0], p.SW[0], p.Sb[0], *shared, p.frozen_w[0],
                      p.frozen_b[0], p.loss, p.opt, p.hp[0], p.mean, p.tiny, fns, Z, A, D)
            if p.input_major:
                kernel, args = KS.train_epoch_sparse, (2, *data, X.split(), *common, *more, flags, losses, stop)
            else:
                kernel, args = KF.train_epoch_2t, (*data, *common, *more, flags, losses, stop)
            key = _slot_key(kernel, (0, *args), p)  # (the workers' arguments differ in t only: one key)
            work = [lambda t=t: with_slots(kernel, (t, *args), fns, p, key) for t in (0, 1)]
            with one_blas_thread(gemm):
                run_workers(work, stop, patience)
            totals[0] = losses[0] + (losses[1] if p.input_major else 0.0)  # the sparse workers share the samples
            return totals

        def one_worker():
            ZAD = [_aligned_zeros((L, bs, maxw), dt) for _ in range(3)]  # Z, A, D
            if p.input_major:  # the sparse epoch as one worker of one
                return [*ZAD, _aligned_zeros((1, bs, int(p.lds[1])), dt), np.zeros((1, 2, bs), np.int64),
                        _aligned_zeros((1, bs, maxw), dt)]
            return [_aligned_zeros((bs, int(p.lds[0])), dt), _aligned_zeros((bs, maxw), dt), *ZAD]

        def calls(t, ks):  # worker t's calls: whole members, one compiled epoch each
            fns = np.zeros(KF.N_SLOTS, np.int64)
            bufs = p.scratch(("1t", t, bs, dt), one_worker)
            flags, losses = np.zeros(32, np.int64), np.zeros(2)  # (the sparse epoch's; no barrier for one)
            for k in ks:
                member = (scale, Y, orders[k], bs, p.W[k], p.b[k], p.SW[k], p.Sb[k], *shared, p.frozen_w[k],
                          p.frozen_b[k], p.loss, p.opt, p.hp[k], p.mean, p.tiny, fns)
                if p.input_major:
                    args = (0, 1, *data, p.sizes[0], *member, *bufs, flags, losses, stop)
                    yield k, KS.train_epoch_sparse, args, fns, losses
                else:
                    yield k, KF.train_epoch, (*data, *member, *bufs, stop), fns, None

        def train(work, key=None):  # (the members' arguments are of the same types: one key)
            for k, kernel, args, fns, losses in work:
                if stop[0] != 0:
                    return
                key = key or _slot_key(kernel, args, p)
                total = with_slots(kernel, args, fns, p, key)
                totals[k] = total if losses is None else losses[0]

        n = max(1, min(self.threads, members.size))
        with one_blas_thread(gemm):
            if n == 1 and _flops(p, orders.shape[1], members.size) <= INLINE_FLOPS:
                work = list(calls(0, members))
                key = _slot_key(*work[0][1:3], p)
                if key[1] in _SLOT_ADDRESSES:  # a short epoch, compiled: here (a thread costs more)
                    train(work, key)
                    return totals
            run_workers([lambda t=t: train(calls(t, members[t::n])) for t in range(n)], stop, patience)
        return totals

    def warmup(self, layers, loss, X, Y, batch_size, opt):
        """Compile (first run) or load from the on-disk cache the kernels this configuration
        needs, by running them on copies of the parameters and two samples. Returns seconds.
        Interrupted (Ctrl-C) during a first compile, it returns at once; the compile, which
        cannot be stopped, finishes on its worker thread and is cached for the next call."""
        t0 = time.perf_counter()
        plan = self.make_plan([layers], loss, [opt], X, Y, sparse=self.use_sparse(X, scan=False))  # as train_epoch
        if plan is not None:
            self.warmup_plan(plan, X, Y, batch_size)
        return time.perf_counter() - t0

    def warmup_plan(self, plan, X, Y, batch_size):
        """As ``warmup``, for a plan (on a copy of it)."""
        t0 = time.perf_counter()
        n = min(2, X.shape[0])
        scale = 1.0 / 255.0 if X.dtype == np.uint8 else 1.0  # (the dtype of the data the plan reads too)
        orders = np.tile(np.arange(n, dtype=np.int64), (plan.n_members, 1))
        self.train_plan(plan.copy(), X, scale, Y, orders, min(batch_size, n), patience=_COMPILE_PATIENCE)
        return time.perf_counter() - t0


def _for(kernel, nrt=True, **codes):
    """A per-batch kernel compiled for these codes (``_nb_common.bound``): a first prediction or
    step compiles only its activation's (and loss's) branch. ``nrt=False``: a kernel that
    allocates nothing, compiled without reference counting."""
    return KC.bound(kernel.py_func, codes, nrt)


INLINE_FLOPS = 2e7  # an epoch of one worker estimated at no more runs on the calling thread (milliseconds)


def _flops(plan, n, members):
    """About the floating-point operations of an epoch of ``members`` over ``n`` samples: a
    multiply-add per weight and sample in the forward pass, the deltas and the gradient."""
    sizes = plan.sizes
    return 6.0 * n * members * float(np.dot(sizes[:-1], sizes[1:]))


_SLOT_ADDRESSES = {}  # (epoch, its argument types, the plan's codes) -> its fns
_COMPILING = threading.Lock()  # held while an epoch's kernels are compiled or loaded


def _fingerprint(a):
    """What Numba's type of argument ``a`` depends on (finer than it, and quicker than
    ``numba.typeof``, which costs more than a small epoch's maths when called per epoch)."""
    if isinstance(a, np.ndarray):
        f = a.flags
        return a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned
    if isinstance(a, tuple):
        return tuple(map(_fingerprint, a))
    return type(a)


def _slot_key(kernel, args, plan):
    """(the kernel's dispatcher, the key of its slots' addresses in ``_SLOT_ADDRESSES``)."""
    dispatcher = getattr(kernel, "dispatcher", kernel)
    return dispatcher, (dispatcher, tuple(map(_fingerprint, args)), plan.acts.tobytes(), int(plan.loss),
                        int(plan.opt))


def with_slots(kernel, args, fns, plan, key=None):
    """Run a fused epoch ``kernel`` on ``args`` after compiling (or loading) it for their types
    and writing into ``fns`` (one of ``args``) the addresses of the kernels it calls by address,
    compiled for the plan's codes (``_nb_epoch.slot_codes``): once per epoch kernel, argument
    types and codes. (A compile runs on a worker thread, see ``warmup``; a compiled short epoch
    may run on the calling thread, see ``train_plan``.) ``key``: ``_slot_key(kernel, args, plan)``
    when the caller has it."""
    dispatcher, key = key or _slot_key(kernel, args, plan)
    addresses = _SLOT_ADDRESSES.get(key)
    if addresses is None:
        argtypes = tuple(numba.typeof(a) for a in args)
        with _COMPILING:  # (two workers of one epoch: the first compiles, the other then loads)
            addresses = _SLOT_ADDRESSES.get(key)
            if addresses is None:
                codes = functools.partial(KF.slot_codes, acts=plan.acts, loss=plan.loss, opt=plan.opt)
                ahead = compile_ahead.Ahead(codes, compile_ahead._cache_path(dispatcher)) \
                    if compile_ahead.wanted(dispatcher, argtypes) else None
                compiled = False
                try:
                    with global_compiler_lock:  # (the hook serves this compile only)
                        KC.DEFER = ahead
                        try:
                            dispatcher.compile(argtypes)
                            compiled = True
                        finally:
                            KC.DEFER = None
                    if ahead is not None:  # (the calls by address of the kernels it calls by symbol: typed there)
                        ahead.add_slots(KC.slots_below(dispatcher.overloads[argtypes]))
                finally:
                    if ahead is not None:
                        ahead.finish(rest=compiled)
                addresses = _SLOT_ADDRESSES[key] = KC.slot_addresses(dispatcher.overloads[argtypes], codes)
    fns[:addresses.size] = addresses
    return dispatcher(*args)


_BLAS_CONTROLLERS = {}  # whether scipy's BLAS was loaded -> a controller of the BLAS libraries loaded


def one_blas_thread(used, scipy=True):
    """While the fused epochs call BLAS (``used``: ``KP.gemm_pays``), BLAS runs on the thread that
    calls it: each fastbp worker is one core's work, and a product spread over BLAS's own threads
    would take the cores from the other worker (and those threads busy-wait after each product).
    Restored after. ``scipy``: load scipy's BLAS first (the library the kernels' gemm calls,
    through Numba's helper), here rather than on its first call inside a kernel on a worker;
    NumPy's own products need only NumPy's."""
    if not used:
        return contextlib.nullcontext()
    if scipy:
        import scipy.linalg.cython_blas  # noqa: F401
    loaded = "scipy.linalg.cython_blas" in sys.modules
    controller = _BLAS_CONTROLLERS.get(loaded)
    if controller is None:
        from threadpoolctl import ThreadpoolController
        controller = _BLAS_CONTROLLERS[loaded] = ThreadpoolController()  # (scans the loaded libraries once)
    return controller.limit(limits=1, user_api="blas")


def kernel_cache():
    """Where the compiled kernels are cached on disk and how much is there: ``cache_dir`` (the
    folder Numba's locator chose for them: the kernels' ``__pycache__``, under ``NUMBA_CACHE_DIR``
    when set, or the user-wide cache when the install folder is not writable), ``cache_files`` and
    ``cache_bytes`` (the kernels' index and data files there)."""
    folder = KF.train_epoch._cache._impl.locator.get_cache_path()
    names = {os.path.splitext(f)[0] for f in os.listdir(KC.KERNELS_DIR) if f.endswith(".py")}
    files = []
    if os.path.isdir(folder):
        files = [os.path.join(folder, f) for f in os.listdir(folder)
                 if f.endswith((".nbi", ".nbc")) and f.split(".", 1)[0] in names]
    return {"cache_dir": folder, "cache_files": len(files),
            "cache_bytes": sum(os.path.getsize(f) for f in files if os.path.exists(f))}


_LEFT_RUNNING = []  # the workers' jobs an interrupted wait left to finish (a compile cannot be stopped)


def finish_left_running(stop, patience=None):
    """Wait (as ``run_workers`` does: Ctrl-C is answered) for the workers an interrupted wait left
    running, so that a new epoch, which may find their compile done and run on the calling thread,
    leaves none of them behind."""
    alive = [th for th in _LEFT_RUNNING if th.is_alive()]
    _LEFT_RUNNING[:] = alive
    if alive:
        run_workers([lambda: [th.join() for th in alive]], stop, patience)
        _LEFT_RUNNING[:] = [th for th in _LEFT_RUNNING if th.is_alive()]


class _Job:
    """One worker's part of a ``run_workers`` call, run by a kept thread (``_POOL``), with the
    part of a Thread's interface that run_workers uses: ``start()``, ``is_alive()`` (started and
    not finished) and ``join()``. When it has run, ``finished`` is set and ``released`` released,
    and it lets go of its work (the closure holds the epoch's plan and data). A job of the parent
    is not alive in a forked child (no thread there runs it)."""

    def __init__(self, work, finished, released):
        self.work, self.finished, self.released = work, finished, released
        self.started, self.pid = False, os.getpid()

    def start(self):
        _POOL.run(self)
        self.started = True  # (after: a job whose thread could not start is not alive)

    def is_alive(self):
        return self.started and not self.finished.is_set() and self.pid == os.getpid()

    def join(self, timeout=None):
        if self.pid == os.getpid():
            self.finished.wait(timeout)


class _Pool:
    """The threads the fused epochs run on, kept between epochs: starting two threads per epoch
    cost 0.2-0.25 ms here (as much as a short epoch's maths), handing a kept one its next job
    0.02 ms. Each thread runs one job at a time and, idle, waits on its queue (no CPU). A thread
    starts with SIGINT blocked, so that the kernel delivers a Ctrl-C to a thread that does not
    block it (the main thread, where Python runs the handler and run_workers answers it). A job's
    thread reports it finished, then goes back among the idle ones (so that a report that never
    completes cannot leave a dead thread there); beyond ``keep`` idle threads it ends instead. A
    thread whose job raised (``guarded`` catches everything: only a misuse) ends too. A forked
    child starts with none (the parent's threads do not exist there)."""

    def __init__(self, keep=max(8, 2 * (os.cpu_count() or 1))):
        self.keep = keep
        self._reset()

    def _reset(self):
        self.lock, self.idle, self.busy, self.numbers = threading.Lock(), [], 0, itertools.count(1)

    def run(self, job):
        with self.lock:
            jobs = self.idle.pop() if self.idle else None
            self.busy += 1
        if jobs is None:
            jobs = queue.SimpleQueue()
            thread = threading.Thread(target=self._serve, args=(jobs,), name=f"fastbp-numba-{next(self.numbers)}",
                                      daemon=True)
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") \
                else None
            try:
                thread.start()
            except BaseException:  # (no thread: "can't start new thread")
                with self.lock:
                    self.busy -= 1
                raise
            finally:
                _restore_sigmask(old)
        jobs.put(job)

    def _serve(self, jobs):
        while True:
            job = jobs.get()
            failed = False
            try:
                job.work()
            except BaseException:
                failed = True
            job.work = None
            with self.lock:
                self.busy -= 1
            job.finished.set()
            job.released.release()
            job = None  # (an idle thread holds nothing of the last epoch)
            with self.lock:
                stay = not failed and len(self.idle) < self.keep
                if stay:
                    self.idle.append(jobs)
            if not stay:
                return


_POOL = _Pool()


def _after_fork_in_child():
    global _COMPILING
    _POOL._reset()
    _LEFT_RUNNING.clear()
    _COMPILING = threading.Lock()  # (a parent's thread may have held it: it has no thread here)
    KC.DEFER = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def busy_workers():
    """How many of the fused epochs' threads are running a job now (idle kept threads not counted)."""
    return _POOL.busy


def run_workers(targets, stop, patience=None):
    """Run each callable of ``targets`` on a thread of its own (kept between calls: ``_Pool``) and
    wait for all of them; their first exception is raised here. On Ctrl-C, ``stop[0]`` is set, which the compiled workers poll,
    and the workers are waited for (at most ``patience`` seconds when given) before the
    KeyboardInterrupt goes on: no worker is left running.

    In the main thread (where Python raises KeyboardInterrupt) SIGINT stays blocked from before
    the workers start until their jobs have finished, and the waiting thread takes it with
    ``signal.sigtimedwait`` between checks of the workers' Events: an interrupt then never lands
    inside ``Thread.start()`` (a worker nobody waits for) nor inside a lock (``Event.wait``'s
    condition left held: the waiting thread and the worker's ``set()`` deadlocked, as a storm of
    SIGINTs showed). It blocks on a lock per worker, released when the worker ends, so it returns
    as soon as they are done, and polls for SIGINT between waits of 10 ms. (Thread.join is not
    trusted either: interrupted while the thread runs, CPython 3.11 marks it stopped while it
    still runs.) When the program has its own SIGINT handler, the
    workers finish their epoch and the signal is raised again after it, for that handler.
    Elsewhere (another thread, or no sigtimedwait) the wait is ``_run_unmasked``'s."""
    errors = []
    done = [threading.Event() for _ in targets]
    # a lock per worker, held until it finishes: the waiting thread blocks on it, so it wakes the
    # moment the worker is done (a poll would add its period to every epoch), and an acquire is one
    # C call that a signal cannot leave half done (Event.wait's Condition can be, see above)
    released = [threading.Lock() for _ in targets]
    for lock in released:
        lock.acquire()

    def guarded(target):
        try:
            target()
        except BaseException as e:  # reported by the waiting thread
            errors.append(e)

    threads = [_Job(functools.partial(guarded, t), ev, lock) for t, ev, lock in zip(targets, done, released)]
    old = _block_sigint() if hasattr(signal, "sigtimedwait") else None
    if old is None:
        return _run_unmasked(threads, done, errors, stop, patience)
    stopping = signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C means: stop
    interrupted, deadline, started = False, None, []
    try:
        for th, ev in zip(threads, done):
            th.start()
            started.append((th, ev))
        waiting = list(released)
        while waiting:
            if deadline is not None and time.monotonic() >= deadline:
                _LEFT_RUNNING.extend(th for th, ev in started if not ev.is_set())
                break  # a compile cannot be stopped: it finishes, and is cached, on its thread
            if waiting[0].acquire(timeout=0.01):
                waiting.pop(0)
                continue
            if signal.sigtimedwait({signal.SIGINT}, 0) is not None:
                interrupted = True
                if stopping:
                    stop[0] = 1
                    if patience is not None and deadline is None:
                        deadline = time.monotonic() + patience
        if signal.sigtimedwait({signal.SIGINT}, 0) is not None:  # one that came as the workers finished
            interrupted = True
    except BaseException:  # another signal's handler raised here
        stop[0] = 1
        _wait_for(started, patience)
        raise
    finally:
        _restore_sigmask(old)
    if interrupted:
        if stopping:
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)  # the program's own handler, now the epoch is whole
    if errors:
        raise errors[0]


def _run_unmasked(threads, done, errors, stop, patience):
    """``run_workers`` where SIGINT cannot be kept blocked for the wait: the workers start with it
    blocked (in the main thread), then the Events are waited on; an interrupt sets the stop flag."""
    started = []
    try:
        old = _block_sigint()
        try:
            for th, ev in zip(threads, done):
                th.start()
                started.append((th, ev))
        finally:
            _restore_sigmask(old)  # a Ctrl-C that came meanwhile is raised here, all threads started
        for _, ev in started:
            ev.wait()
    except BaseException:
        stop[0] = 1
        _wait_for(started, patience)
        raise
    if errors:
        raise errors[0]


def _wait_for(started, patience):
    """Wait until each worker has finished (at most ``patience`` seconds in all); further interrupts meanwhile are ignored (the workers stop within a batch)."""
    deadline = None if patience is None else time.monotonic() + patience
    for th, finished in started:
        while not finished.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                _LEFT_RUNNING.extend(th for th, ev in started if not ev.is_set())
                return
            try:
                finished.wait(0.05)
            except KeyboardInterrupt:
                pass


def _block_sigint():
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask"):
        return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    return None


def _restore_sigmask(old):
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
