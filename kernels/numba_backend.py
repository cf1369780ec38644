"""The Numba backend: the NumPy reference's maths, compiled for the CPU.

Training runs one compiled call per epoch (``train_epoch``): the whole mini-batch loop (gather
by the shuffled order, uint8 scaled on the fly, forward, deltas, gradients, SGD update) inside
one ``@njit`` function, for any depth, every activation and loss, momentum, weight decay, frozen
parameters and both reductions. The kernels are in ``_numba_kernels.py`` (compiled with
``cache=True``: a new process loads them from disk instead of compiling).

What is compiled and what is not, honestly: ``train_epoch`` is entirely compiled; of the
per-batch methods (the generic path, used by ``Network.train_batch``, ``gradients`` and
inference) the activations, output deltas, losses and SGD updates are compiled; ``forward`` on
64 rows or more (evaluation, prediction) uses the fused epoch's blocked product, and the other
matrix products (``x @ W`` on small batches, ``x.T @ delta``) are NumPy's (BLAS). Keeping BLAS out
of evaluation matters for two threads: OpenBLAS's own threads busy-wait for a while after each
threaded product and would take the cores from the next epoch's workers.

Threads: ``threads=1`` (the default) or ``2``. With two, the epoch of a network of two or more
layers runs on two persistent workers (two Python threads, each inside a ``nogil`` compiled
function for the whole epoch): each owns about half the units of the first (big) layer and does
its forward pass and update; worker 0 alone does the small layers above in between, while
worker 1 gathers the next batch. Two spin barriers per batch, built on acquire/release atomics,
separate the phases (see ``train_epoch_2t``); after a few thousand polls a waiting worker yields
its core. One-layer networks (and machines other than x86-64 Linux/macOS) use one thread.
Spinning wastes a core when the machine is oversubscribed, hence the default of one thread.

Interrupts: the fused epoch (one thread or two) runs on worker threads while the calling thread
waits (``run_workers``), so Ctrl-C is answered at once: the workers poll a stop flag before each
batch and in the barriers, the epoch's work (done on the plan's copies of the parameters) is
discarded, and the layers keep the weights they had before the epoch. An interrupted first
compile returns at once too; the compile itself cannot be stopped and finishes, and is cached,
on its worker thread.

Environment: nothing process-wide is changed. Numba's cache lives in ``__pycache__`` beside the
kernels (or ``NUMBA_CACHE_DIR``); ``NumbaBackend.info()`` reports versions, the CPU name and
features Numba compiles for, and whether ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` are set.
"""
from __future__ import annotations

import functools
import os
import platform
import signal
import sys
import threading
import time

import numpy as np

from .base import Backend
from .numpy_backend import NumpyBackend

import numba  # noqa: E402  (ImportError here makes the registry report the backend unavailable)

from . import _numba_kernels as K  # noqa: E402

# the two-thread kernel's barrier uses x86's pause instruction and libc's sched_yield
TWO_THREADS_SUPPORTED = platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"
_COMPILED_PRODUCT_ROWS = 64  # forward(): from this many rows on, the compiled product instead of BLAS
_COMPILE_PATIENCE = 0.25  # seconds an interrupted warmup waits for its worker (a compile cannot be stopped)
_FLUSH = {np.dtype(np.float32): 1e-30, np.dtype(np.float64): 0.0}  # deltas below: zero (no subnormals)


def _aligned_zeros(shape, dtype, align=128):
    """Zeros whose first element sits on an ``align``-byte boundary (whole cache lines: the two
    workers never write the same line when their parts start on a line)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    buf = np.zeros(n + align // dtype.itemsize, dtype)
    off = (-buf.ctypes.data % align) // dtype.itemsize
    return buf[off:off + n].reshape(shape)


def _aligned(a):
    out = _aligned_zeros(a.shape, a.dtype)
    out[...] = a
    return out


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
        raise TypeError(f"threads: expected 1 or 2 (an int), got {threads!r}")
    if threads not in (1, 2):
        raise ValueError(f"threads: expected 1 or 2, got {threads}")
    return int(threads)


class NumbaBackend(NumpyBackend):
    """CPU backend compiled with Numba. ``threads``: 1 (default) or 2 (see the module doc);
    ``fused``: False disables the one-call-per-epoch kernel (the per-batch kernels are used)."""

    name = "numba"

    def __init__(self, dtype="float32", threads=None, fused=True):
        Backend.__init__(self, dtype)
        self.threads = _check_threads(threads)
        self.fused = bool(fused)
        self._T = self.dtype.type

    def __repr__(self):
        return f"NumbaBackend(dtype={self.dtype.name!r}, threads={self.threads})"

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
            "cache_dir": os.environ.get("NUMBA_CACHE_DIR") or os.path.join(os.path.dirname(K.__file__), "__pycache__"),
        }

    # --- per-batch kernels (NumPy's products, compiled elementwise work) ---------------------
    def _slope(self, activation):
        return self._T(activation.slope)

    @_interrupt_as_such
    def forward(self, x, W, b, activation):
        if x.ndim == 2 and x.shape[0] >= _COMPILED_PRODUCT_ROWS:
            # large batches (evaluation, prediction): the blocked compiled product, which leaves
            # BLAS's thread pool asleep. OpenBLAS's threads busy-wait for a while after each
            # threaded product, and would take the cores from the two-thread epoch that follows.
            x = np.ascontiguousarray(x, dtype=self.dtype)
            z = np.empty((x.shape[0], W.shape[1]), dtype=self.dtype)
            K.forward_units(x, x.shape[0], x.shape[1], np.ascontiguousarray(W.T, dtype=self.dtype).reshape(-1), 0,
                            np.ascontiguousarray(b, dtype=self.dtype), 0, W.shape[1], self._T(1), z)
        else:
            z = x @ W + b
        return z, K.activate(np.ascontiguousarray(z), K.ACT_CODES[activation.name], self._slope(activation))

    @_interrupt_as_such
    def activation_backward(self, g, z, a, activation):
        return K.activation_backward(np.ascontiguousarray(g), z, a, K.ACT_CODES[activation.name],
                                     self._slope(activation))

    @_interrupt_as_such
    def output_delta(self, z, a, y, activation, loss):
        d, _ = K.output_delta(z, a, np.ascontiguousarray(y, dtype=self.dtype), K.ACT_CODES[activation.name],
                              self._slope(activation), K.LOSS_CODES[loss])
        return d

    @_interrupt_as_such
    def loss(self, a, y, loss):
        # the loss needs no z or activation: run output_delta with the identity and take the value
        _, total = K.output_delta(a, a, np.ascontiguousarray(y, dtype=self.dtype), K.IDENTITY, self._T(0),
                                  K.LOSS_CODES[loss])
        return float(total)

    @_interrupt_as_such
    def sgd_update(self, p, g, v, step, momentum=0.0, decay=0.0):
        if momentum and v is None:
            raise ValueError("v: momentum needs a velocity array, got None")
        for name, a in (("g", g), ("v", v if momentum else None)):
            if a is not None and np.shape(a) != np.shape(p):  # the compiled loop trusts the sizes
                raise ValueError(f"{name}: expected shape {np.shape(p)} (the parameter's), got {np.shape(a)}")
        if not (p.flags.c_contiguous and (v is None or v.flags.c_contiguous)):
            return NumpyBackend.sgd_update(self, p, g, v, step, momentum, decay)  # in place on any layout
        K.sgd_update(p.reshape(-1), np.ascontiguousarray(g, dtype=self.dtype).reshape(-1),
                     v.reshape(-1) if momentum else p.reshape(-1), float(step), float(momentum), float(decay))

    # --- the fused epoch -----------------------------------------------------------------
    def _plan(self, layers, loss, X, Y, opt):
        """The flat transposed parameters and codes for the fused kernel, or None when this
        configuration is not covered."""
        if not self.fused or loss not in K.LOSS_CODES or X.ndim != 2 or Y.ndim != 2:
            return None
        if X.dtype not in (np.uint8, self.dtype) or Y.dtype != self.dtype:
            return None
        for layer in layers:
            if layer.activation.name not in K.ACT_CODES:
                return None
            for p in (layer.W, layer.b):
                if not isinstance(p, np.ndarray) or p.dtype != self.dtype:
                    return None
        dt = self.dtype
        sizes = np.array([layers[0].n_in] + [layer.n_out for layer in layers], dtype=np.int64)
        pad = 128 // dt.itemsize  # rows padded to 128 bytes: the vector loops need no scalar tail
        lds = (sizes + pad - 1) // pad * pad
        woff = np.zeros(len(layers), dtype=np.int64)
        boff = np.zeros(len(layers), dtype=np.int64)
        for i in range(1, len(layers)):
            woff[i] = woff[i - 1] + sizes[i] * lds[i - 1]
            boff[i] = boff[i - 1] + sizes[i]
        W = self._pack([layer.W for layer in layers], sizes, lds)
        b = _aligned(np.concatenate([layer.b.ravel() for layer in layers]).astype(dt, copy=False))
        mom = opt.momentum > 0
        if mom:
            for layer in layers:
                for name, p in (("W", layer.W), ("b", layer.b)):
                    if name not in layer.frozen and layer.velocity.get(name) is None:
                        layer.velocity[name] = np.zeros(p.shape, dtype=dt)
            VW = self._pack([layer.velocity.get("W") for layer in layers], sizes, lds)
            vb = _aligned(np.concatenate([layer.velocity["b"].ravel() if "b" in layer.velocity
                                          else np.zeros(layer.b.size, dt) for layer in layers]).astype(dt, copy=False))
        else:
            VW = np.zeros(1, dt)
            vb = np.zeros(b.size, dt)
        return dict(
            W=W, b=b, VW=VW, vb=vb, woff=woff, boff=boff, sizes=sizes, lds=lds,
            acts=np.array([K.ACT_CODES[layer.activation.name] for layer in layers], dtype=np.int64),
            slopes=np.array([layer.activation.slope for layer in layers], dtype=np.float64),
            frozen_w=np.array(["W" in layer.frozen for layer in layers]),
            frozen_b=np.array(["b" in layer.frozen for layer in layers]),
            loss=K.LOSS_CODES[loss], lr=float(opt.lr), mu=float(opt.momentum), wd=float(opt.weight_decay),
            mean=opt.reduction == "mean", tiny=_FLUSH[self.dtype], mom=mom,
        )

    def _pack(self, mats, sizes, lds):
        """Matrices (n_in, n_out) (None: zeros) as one flat buffer of their transposes, each row
        zero-padded to its layer's stride."""
        flat = _aligned_zeros(int(np.sum(sizes[1:] * lds[:-1])), self.dtype)
        o = 0
        for i, M in enumerate(mats):
            n_in, n_out, ld = sizes[i], sizes[i + 1], lds[i]
            if M is not None:
                flat[o:o + n_out * ld].reshape(n_out, ld)[:, :n_in] = M.T
            o += n_out * ld
        return flat

    @staticmethod
    def _view(flat, plan, i):
        """Layer i's (n_in, n_out) weights inside a flat transposed buffer."""
        n_in, n_out, ld, o = plan["sizes"][i], plan["sizes"][i + 1], plan["lds"][i], plan["woff"][i]
        return flat[o:o + n_out * ld].reshape(n_out, ld)[:, :n_in].T

    def _unpack(self, layers, plan):
        """Copy the flat transposed parameters (and velocities) back into the layers' arrays."""
        sizes, boff = plan["sizes"], plan["boff"]
        for i, layer in enumerate(layers):
            n_out = sizes[i + 1]
            layer.W[...] = self._view(plan["W"], plan, i)
            layer.b[...] = plan["b"][boff[i]:boff[i] + n_out]
            if plan["mom"]:
                if "W" in layer.velocity:
                    layer.velocity["W"][...] = self._view(plan["VW"], plan, i)
                if "b" in layer.velocity:
                    layer.velocity["b"][...] = plan["vb"][boff[i]:boff[i] + n_out]

    def _two_threads(self, plan):
        return (self.threads == 2 and TWO_THREADS_SUPPORTED and len(plan["acts"]) >= 2
                and plan["sizes"][1] >= 2)

    def train_epoch(self, layers, loss, X, scale, Y, order, batch_size, opt):
        plan = self._plan(layers, loss, X, Y, opt)
        if plan is None:
            return None
        order = np.ascontiguousarray(order, dtype=np.int64)
        total = self._epoch(plan, X, float(scale), Y, order, int(min(batch_size, len(order))))
        self._unpack(layers, plan)
        return float(total)

    def _epoch(self, p, X, scale, Y, order, bs, patience=None):
        """The fused epoch on the plan's copies of the parameters, on worker threads (one, or two
        for ``train_epoch_2t``) while this thread waits, so that Ctrl-C is answered at once: the
        workers are told to stop (they poll a flag before each batch) and the epoch's work is
        discarded, the layers keep what they had. Returns the summed loss."""
        stop = _aligned_zeros(16, np.int64)
        args = (X, scale, Y, order, bs, p["W"], p["b"], p["VW"], p["vb"], p["woff"], p["boff"], p["sizes"],
                p["lds"], p["acts"], p["slopes"], p["frozen_w"], p["frozen_b"], p["loss"], p["lr"], p["mu"],
                p["wd"], p["mean"], p["tiny"])
        if not self._two_threads(p):
            result = []
            run_workers([lambda: result.append(K.train_epoch(*args, stop))], stop, patience)
            return result[0]
        dt = self.dtype
        maxw = int(max(p["lds"][1:]))
        L = len(p["acts"])
        Z = _aligned_zeros((L, bs, maxw), dt)  # rows of 128-byte multiples, cache-line aligned
        A = _aligned_zeros((L, bs, maxw), dt)
        D = _aligned_zeros((L, bs, maxw), dt)
        flags = _aligned_zeros(32, np.int64)
        losses = np.zeros(2)
        run_workers([lambda t=t: K.train_epoch_2t(t, *args, Z, A, D, flags, losses, stop) for t in (0, 1)],
                    stop, patience)
        return losses[0]

    def warmup(self, layers, loss, X, Y, batch_size, opt):
        """Compile (first run) or load from the on-disk cache the kernels this configuration
        needs, by running them on copies of the parameters and two samples. Returns seconds.
        Interrupted (Ctrl-C) during a first compile, it returns at once; the compile, which
        cannot be stopped, finishes on its worker thread and is cached for the next call."""
        t0 = time.perf_counter()
        plan = self._plan(layers, loss, X, Y, opt)
        if plan is not None:
            n = min(2, X.shape[0])
            scale = 1.0 / 255.0 if X.dtype == np.uint8 else 1.0
            self._epoch(plan, X, scale, Y, np.arange(n, dtype=np.int64), min(batch_size, n),
                        patience=_COMPILE_PATIENCE)
        return time.perf_counter() - t0


def run_workers(targets, stop, patience=None):
    """Run each callable of ``targets`` on a thread of its own and wait for all of them; their
    first exception is raised here. When the wait is interrupted (Ctrl-C, or any exception in
    this thread), ``stop[0]`` is set, which the compiled workers poll, and the workers are
    waited for (at most ``patience`` seconds when given) before the interruption goes on: no
    worker is left spinning. SIGINT is blocked while the threads start, so that an interrupt
    cannot land inside ``Thread.start()`` and leave a worker nobody waits for."""
    errors = []

    def guarded(target):
        try:
            target()
        except BaseException as e:  # reported by the waiting thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(t,), name=f"fastbp-numba-{i}", daemon=True)
               for i, t in enumerate(targets)]
    started = []
    try:
        old = _block_sigint()
        try:
            for th in threads:
                th.start()
                started.append(th)
        finally:
            _restore_sigmask(old)  # a Ctrl-C that came meanwhile is raised here, all threads started
        for th in started:
            th.join()
    except BaseException:
        stop[0] = 1
        deadline = None if patience is None else time.monotonic() + patience
        for th in started:
            while th.is_alive():
                try:
                    th.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                except KeyboardInterrupt:  # a second Ctrl-C: still wait for the workers
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    break
        raise
    if errors:
        raise errors[0]


def _block_sigint():
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask"):
        return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    return None


def _restore_sigmask(old):
    if old is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
