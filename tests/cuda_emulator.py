"""CUDA on the CPU, for the tests that have no GPU.

``EMULATOR``: the C++ prelude that runs a CUDA thread block on CPU threads (one POSIX thread per
CUDA thread, a barrier for ``__syncthreads``, the warp shuffles through an exchange buffer
guarded by one barrier per warp); a rendered kernel compiles after it as C++.

``HostCupy``: a stand-in for the cupy module, enough of it for ``CupyBackend``'s fused engines:
its arrays are NumPy arrays in host memory (an ``ndarray`` subclass with ``.data.ptr``), each
followed by poison (NaN or 0xFF bytes: reads past an array's end go wrong visibly, writes there are
caught by ``check_guards``), and its
``RawKernel`` compiles the fused epoch kernel's rendered source after the prelude into a shared
library (g++) and launches it through ctypes, the grid's blocks one after another (the blocks of
the fused kernel share nothing). So the backend's Python side (plans, engines, the members'
pointer tables, divergence, the ensemble contract) runs here exactly as on a GPU, against the
real kernel source. Anything else (``RawModule``: the batched path's kernels) raises
NotImplementedError: those paths are tested on a GPU only.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import types

import numpy as np

GXX = shutil.which("g++")

EMULATOR = r"""
// CUDA thread blocks on the CPU: NT POSIX threads, __syncthreads as a barrier, warp shuffles
// through an exchange buffer guarded by one barrier per warp. Each case's rendered kernel goes in
// its own namespace (one compilation for all cases). Only C headers and <cmath>: <thread>,
// <barrier>, <vector> and <memory> took 1.3 s of each g++ run, more than the kernel itself.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
template <typename A> static inline A max(A a, A b) { return a < b ? b : a; }
template <typename A> static inline A min(A a, A b) { return b < a ? b : a; }
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__
#define __align__(n)
#define __restrict__
#define __cluster_dims__(...)
struct fb_dim { int x; };
thread_local fb_dim threadIdx, blockIdx;
static void fb_check(int err, const char *what) {
    if (err) { std::fprintf(stderr, "%s failed (%d)\n", what, err); std::exit(5); }
}
template <typename V> struct fb_buf {  // n zeroed values on the heap (a std::vector without <vector>)
    V *p;
    size_t n;
    explicit fb_buf(size_t count) : p(static_cast<V *>(std::calloc(count ? count : 1, sizeof(V)))), n(count) {
        if (!p) { std::fprintf(stderr, "out of memory\n"); std::exit(5); }
    }
    fb_buf(fb_buf &&o) : p(o.p), n(o.n) { o.p = nullptr; o.n = 0; }
    fb_buf(const fb_buf &) = delete;
    ~fb_buf() { std::free(p); }
    V *data() { return p; }
    const V *data() const { return p; }
    size_t size() const { return n; }
    V &operator[](size_t i) { return p[i]; }
};
struct fb_block_state {  // one running block: its barriers, shuffle slots and shared memory
    pthread_barrier_t block;
    fb_buf<pthread_barrier_t> warps;
    fb_buf<double> slots;
    fb_buf<unsigned char> shared;
    int rank;
    fb_block_state(int nt, int r) : warps(nt / 32), slots(nt), shared(1 << 20), rank(r) {
        fb_check(pthread_barrier_init(&block, nullptr, nt), "pthread_barrier_init");
        for (int w = 0; w < nt / 32; w++) fb_check(pthread_barrier_init(&warps[w], nullptr, 32), "pthread_barrier_init");
    }
    ~fb_block_state() {
        pthread_barrier_destroy(&block);
        for (size_t w = 0; w < warps.size(); w++) pthread_barrier_destroy(&warps[w]);
    }
};
static void fb_wait(pthread_barrier_t *b) {
    const int err = pthread_barrier_wait(b);
    if (err && err != PTHREAD_BARRIER_SERIAL_THREAD) fb_check(err, "pthread_barrier_wait");
}
thread_local fb_block_state *fb_here;
static fb_block_state *fb_cluster_blocks[16];  // the running cluster's blocks, by rank
static pthread_barrier_t fb_cluster_barrier;
static void __syncthreads() { fb_wait(&fb_here->block); }
static void __syncwarp() { fb_wait(&fb_here->warps[threadIdx.x >> 5]); }
static void fb_cluster_sync() { fb_wait(&fb_cluster_barrier); }
static int fb_cluster_rank() { return fb_here->rank; }
template <typename F> static F *fb_remote(F *p, int r) {  // the same place in block r's shared memory
    return reinterpret_cast<F *>(fb_cluster_blocks[r]->shared.data()
                                 + (reinterpret_cast<unsigned char *>(p) - fb_here->shared.data()));
}
template <typename Body> struct fb_thread_args { Body *body; fb_block_state *state; int t, block; };
template <typename Body> static void *fb_thread_main(void *p) {
    auto *a = static_cast<fb_thread_args<Body> *>(p);
    fb_here = a->state;
    threadIdx.x = a->t;
    blockIdx.x = a->block;
    (*a->body)();
    return nullptr;
}
// A grid of `blocks` blocks of `nt` threads, `cluster` blocks at a time: a cluster's blocks run
// together (they wait for each other), clusters one after another (they share nothing).
template <typename Body> static void fb_run_grid(int blocks, int nt, int cluster, Body body) {
    if (cluster > 16) { std::fprintf(stderr, "cluster of %d blocks\n", cluster); std::exit(5); }
    for (int first = 0; first < blocks; first += cluster) {
        fb_buf<fb_block_state *> states(cluster);
        for (int r = 0; r < cluster; r++) fb_cluster_blocks[r] = states[r] = new fb_block_state(nt, r);
        fb_check(pthread_barrier_init(&fb_cluster_barrier, nullptr, cluster * nt), "pthread_barrier_init");
        fb_buf<pthread_t> threads(size_t(cluster) * nt);
        fb_buf<fb_thread_args<Body>> args(size_t(cluster) * nt);
        for (int r = 0; r < cluster; r++)
            for (int t = 0; t < nt; t++) {
                const size_t i = size_t(r) * nt + t;
                args[i] = {&body, states[r], t, first + r};
                fb_check(pthread_create(&threads[i], nullptr, fb_thread_main<Body>, &args[i]), "pthread_create");
            }
        for (size_t i = 0; i < threads.size(); i++) fb_check(pthread_join(threads[i], nullptr), "pthread_join");
        pthread_barrier_destroy(&fb_cluster_barrier);
        for (int r = 0; r < cluster; r++) delete states[r];
    }
}
struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
struct float2 { float x, y; };
static float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static double2 make_double2(double x, double y) { return {x, y}; }
template <typename F> static F __shfl_sync(unsigned, F v, int src) {
    const int t = threadIdx.x, w = t >> 5;
    fb_here->slots[t] = double(v);
    fb_wait(&fb_here->warps[w]);
    const F r = F(fb_here->slots[(w << 5) | src]);
    fb_wait(&fb_here->warps[w]);
    return r;
}
template <typename F> static F __shfl_xor_sync(unsigned, F v, int o) {
    const int t = threadIdx.x, w = t >> 5;
    fb_here->slots[t] = double(v);
    fb_wait(&fb_here->warps[w]);
    const F r = F(fb_here->slots[t ^ o]);
    fb_wait(&fb_here->warps[w]);
    return r;
}
static FILE *fb_open(const char *dir, const char *name, const char *mode) {
    char path[4096];
    std::snprintf(path, sizeof path, "%s/%s", dir, name);
    return std::fopen(path, mode);
}
template <typename V> static fb_buf<V> load(const char *dir, const char *name, size_t n) {
    fb_buf<V> v(n);
    FILE *f = fb_open(dir, name, "rb");
    if (!f || std::fread(v.data(), sizeof(V), n, f) != n) { std::fprintf(stderr, "cannot read %s\n", name); std::exit(2); }
    std::fclose(f);
    return v;
}
template <typename V> static void save(const char *dir, const char *name, const fb_buf<V> &v) {
    FILE *f = fb_open(dir, name, "wb");
    std::fwrite(v.data(), sizeof(V), v.size(), f);
    std::fclose(f);
}
"""

LAUNCHER = r"""
extern "C" int fb_launch(int blocks, void **a) {  // fused_epoch's arguments, in its order
    fb_run_grid(blocks, NT, CL, [&] {
        fused_epoch((const XT *)a[0], (const T *)a[1], (const long long *)a[2], *(const int *)a[3],
                    *(const double *)a[4], (T *const *)a[5], *(const int *)a[6], (const double *)a[7],
                    *(const int *)a[8], (const int *)a[9], *(const double *)a[10], *(const double *)a[11],
                    (double *)a[12], (int *)a[13]);
    });
    return 0;
}
"""


def as_cpp(source):
    """A rendered kernel as C++ after the prelude: C++ linkage, and its shared memory the running
    block's."""
    return (source.replace('extern "C" __global__', "__global__")
            .replace("extern __shared__ __align__(16) unsigned char fb_shared[];",
                     "unsigned char *const fb_shared = fb_here->shared.data();"))


_LIBRARIES = {}  # source hash -> loaded library (one compilation per kernel source per process)


def build(source):
    """The kernel source compiled after the prelude into a shared library (cached by source)."""
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    if key not in _LIBRARIES:
        folder = tempfile.mkdtemp(prefix="fb-emu-")
        cpp, lib = os.path.join(folder, "k.cpp"), os.path.join(folder, "k.so")
        with open(cpp, "w") as f:
            f.write(EMULATOR + as_cpp(source) + LAUNCHER)
        done = subprocess.run([GXX, "-std=c++20", "-O1", "-pthread", "-w", "-shared", "-fPIC", cpp, "-o", lib],
                              capture_output=True, text=True, timeout=300)
        if done.returncode:  # (the folder stays, with the source the messages point into)
            raise RuntimeError(f"the emulated kernel failed to compile ({cpp}):\n{done.stderr}")
        _LIBRARIES[key] = ctypes.CDLL(lib)
        shutil.rmtree(folder, ignore_errors=True)  # (a loaded library needs its file no more)
    return _LIBRARIES[key]


class ndarray(np.ndarray):
    """A "device" array: host memory, with cupy's ``.data.ptr``."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


GUARD = 4096  # bytes of poison after every array HostCupy makes: a kernel's reads past an array's
# end see NaNs (floats) or 0xFF bytes, and its writes there are found by HostCupy.check_guards()
_GUARDED = []  # (buffer, bytes of the array) of every array made, for check_guards


def _dev(a):
    a = np.asarray(a)
    buf = np.empty(a.nbytes + GUARD, np.uint8)
    if a.dtype.kind == "f":
        buf[a.nbytes:].view(a.dtype)[...] = np.nan
    else:
        buf[a.nbytes:] = 0xFF
    out = buf[:a.nbytes].view(a.dtype).reshape(a.shape).view(ndarray)
    out[...] = a
    _GUARDED.append((buf, a.nbytes, a.dtype))
    return out


def check_guards():
    """AssertionError when a kernel wrote past the end of an array HostCupy made (its poison
    changed); forgets the arrays made so far."""
    try:
        for buf, n, dtype in _GUARDED:
            tail = buf[n:]
            intact = np.isnan(tail.view(dtype)).all() if dtype.kind == "f" else (tail == 0xFF).all()
            assert intact, f"a kernel wrote past the end of a {dtype} array of {n} bytes"
    finally:
        _GUARDED.clear()


class RawKernel:
    """The fused epoch kernel, compiled for CPU threads on first use."""

    def __init__(self, code, name):
        if name != "fused_epoch":
            raise NotImplementedError(f"the host emulator runs the fused epoch kernel only, not {name!r}")
        self.code, self.name = code, name
        self.max_dynamic_shared_size_bytes = 0
        self.launches = []  # (grid, block) of each launch, for the tests

    def compile(self):
        build(self.code)

    def __call__(self, grid, block, args, shared_mem=0):
        if shared_mem > (1 << 20) or shared_mem > max(self.max_dynamic_shared_size_bytes, 48 * 1024):
            raise ValueError(f"shared memory {shared_mem} bytes above the kernel's opt-in")
        keep, pointers = [], []
        for a in args:
            if isinstance(a, np.ndarray) and not isinstance(a, ndarray):
                raise TypeError("a host NumPy array passed to a kernel (cupy would refuse it too)")
            if isinstance(a, ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError("a non-contiguous array passed to a kernel")
                pointers.append(a.ctypes.data)
                continue
            c = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float64: ctypes.c_double,
                 np.uint64: ctypes.c_uint64}[type(a)](a)
            keep.append(c)
            pointers.append(ctypes.addressof(c))
        self.launches.append((tuple(grid), tuple(block)))
        table = (ctypes.c_void_p * len(pointers))(*pointers)
        assert build(self.code).fb_launch(int(grid[0]), table) == 0


class HostCupy(types.ModuleType):
    """The stand-in module (see the module doc). ``kernels``: every RawKernel made, in order."""

    def __init__(self):
        super().__init__("cupy")
        self.__version__ = "0.0-host-emulator"
        self.ndarray = ndarray
        self.float32, self.float64, self.int32, self.int64, self.uint8 = (
            np.float32, np.float64, np.int32, np.int64, np.uint8)
        self.kernels = []
        device = types.SimpleNamespace(id=0, compute_capability="90", synchronize=lambda: None,
                                       attributes={"MaxSharedMemoryPerBlockOptin": 227 * 1024})
        runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, runtimeGetVersion=lambda: 0,
                                        driverGetVersion=lambda: 0,
                                        getDeviceProperties=lambda i: {"name": b"host emulator"})
        self.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda *a: device)

    def RawKernel(self, code, name, **kw):
        kernel = RawKernel(code, name)
        self.kernels.append(kernel)
        return kernel

    def RawModule(self, **kw):
        raise NotImplementedError("the host emulator runs the fused epoch kernel only (no batched path)")

    # arrays: a copy from the host, as cupy makes
    def asarray(self, a, dtype=None):
        if isinstance(a, ndarray) and (dtype is None or a.dtype == np.dtype(dtype)):
            return a
        return _dev(np.array(a, dtype=dtype, copy=True))

    def ascontiguousarray(self, a, dtype=None):
        return _dev(np.ascontiguousarray(self.asarray(a), dtype=dtype))

    def asnumpy(self, a):
        return np.array(a).view(np.ndarray)

    def zeros(self, shape, dtype=float):
        return _dev(np.zeros(shape, dtype))

    def ones(self, shape, dtype=float):
        return _dev(np.ones(shape, dtype))

    def empty(self, shape, dtype=float):
        return _dev(np.empty(shape, dtype))

    def empty_like(self, a):
        return _dev(np.empty_like(a))

    def zeros_like(self, a):
        return _dev(np.zeros_like(a))

    def where(self, *args):
        return _dev(np.where(*args))

    def exp(self, a):
        return np.exp(a)

    def sum(self, a, **kw):
        return np.sum(a, **kw)
