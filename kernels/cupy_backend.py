"""The CuPy backend: the NumPy reference's maths on an NVIDIA GPU.

Arrays live on the GPU. ``fit`` moves the training data there once (``prepare_data``: uint8 stays
uint8 and is scaled in the kernels), never per batch; results come back as NumPy only through
``to_numpy`` (``predict``, ``get_params``). The kernels take CuPy arrays only: a NumPy array where
device data is expected raises TypeError instead of being copied silently (``asarray`` and
``prepare_data`` are the explicit transfers; batch indices may be NumPy).

Two paths:
- per batch (any depth, any batch size; the network's generic loop): the products go to cuBLAS
  (``@``), the elementwise work (gather + scale, bias + activation, deltas, loss terms, the
  optimiser's step) is one launch each of the kernels of ``batch_step.cu``, the same kernels the
  batched epoch launches: each piece of elementwise maths has one CUDA copy;
- ``train_epoch``, the fused whole-epoch kernel (``fused_epoch.cu``) for two-layer networks at
  small batch sizes: ONE launch per epoch, one thread block per network, both weight matrices
  resident in shared memory (784x30 + 30x10 float32 is about 96 KB, above the default 48 KB
  limit, hence the opt-in ``cudaFuncAttributeMaxDynamicSharedMemorySize``). An ensemble's
  members share the launch, a block each (engine ``cupy-fused-members``): block k reads member
  k's row of a table of pointers (its parameters and optimiser state, left in its layers), its
  sample order, hyperparameters and frozen bits, so K members fill K SMs;
- ``train_epoch`` for what the fused kernel does not cover (deeper nets, batch sizes above
  ``FUSED_MAX_BATCH``, shapes whose shared memory does not fit): the batched epoch, cuBLAS
  products into buffers made once per epoch and one RawKernel launch (``batch_step.cu``) for
  each step between them, the loss summed on the GPU (an ensemble's members one after another).
  Networks with a softmax layer take the generic per-batch path; ``fused=False`` forces it for
  everything. Never a wrong result.

The CUDA source is a text template: ``render_fused_epoch`` substitutes sizes and types, so the
rendering can be checked (and compiled with nvcc) on a machine without a GPU. CuPy is imported
only when the backend is constructed; without CuPy or without a GPU the constructor raises
``BackendUnavailable`` with one message saying what is missing and what to install.
"""
from __future__ import annotations

import os
import string
import time

import numpy as np

from . import ops
from .base import ACTIVATIONS, LOSSES, Backend, Engine
from .plan import LayerPlan
from .sparse import is_sparse

cp = None  # the cupy module, imported by _import_cupy() when the backend is constructed

# the codes the kernels branch on and the pairs whose derivatives cancel: the one table of ops
ACT_CODES, LOSS_CODES, CANCELLING = ops.ACT_CODES, ops.LOSS_CODES, ops.CANCELLING
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.uint8): "unsigned char"}

FUSED_MAX_BATCH = 128  # larger batches: the per-batch cuBLAS path (the GPU is busy enough there)
FUSED_THREADS = 512    # threads of the fused kernel's one block (up to 128 registers each)
CLUSTER_SIZES = (1, 2, 4, 8)  # blocks per network (8: the portable maximum of a thread-block cluster)
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_epoch.cu")
BATCH_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "batch_step.cu")
BATCH_THREADS = 256  # threads per block of the batched path's elementwise kernels

INSTALL_HINT = ("install the 'gpu' extra (pip install 'fastbp[gpu]', which brings cupy-cuda12x for "
                "a CUDA 12 driver) or, for a CUDA 13 driver, pip install cupy-cuda13x; nvidia-smi "
                "shows the driver's CUDA version")


def _import_cupy():
    """The cupy module; raises BackendUnavailable (one message: what is missing, how to fix it)."""
    global cp
    if cp is not None:
        return cp
    from . import BackendUnavailable

    try:
        import cupy
    except Exception as e:  # ImportError, or a CUDA library that fails to load
        raise BackendUnavailable(f"backend 'cupy' is not available: CuPy cannot be imported "
                                 f"({type(e).__name__}: {e}); {INSTALL_HINT}") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, or a driver too old for this CuPy's CUDA
        raise BackendUnavailable(f"backend 'cupy' is not available: CuPy {cupy.__version__} is "
                                 f"installed but finds no usable NVIDIA GPU ({type(e).__name__}: "
                                 f"{e}); check the driver with nvidia-smi, or {INSTALL_HINT}") from e
    if count < 1:
        raise BackendUnavailable(f"backend 'cupy' is not available: CuPy {cupy.__version__} is "
                                 f"installed but finds no NVIDIA GPU; {INSTALL_HINT}")
    cp = cupy
    return cp


# --- the CUDA source template --------------------------------------------------------------
def _source():
    with open(SOURCE, encoding="utf-8") as f:
        return f.read()


def math_preamble():
    """The math section of fused_epoch.cu (activations, derivatives, losses, the optimisers' update
    rule, as templates), its ``${OPS_DEFINES}`` rendered: the preamble of batch_step.cu's kernels
    (the batched epoch's and the per-batch path's)."""
    text = _source()
    begin, end = "// ---- BEGIN MATH ----", "// ---- END MATH ----"
    section = text[text.index(begin) + len(begin):text.index(end)]
    return string.Template(section).substitute(OPS_DEFINES=ops.cuda_defines())


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_cluster(value, n_hidden=None):
    """``cluster``: 1, 2, 4 or 8 blocks per network, and (given ``n_hidden``) every block owning at
    least one hidden unit."""
    if isinstance(value, bool) or value not in CLUSTER_SIZES:
        raise ValueError(f"cluster: expected one of {', '.join(map(str, CLUSTER_SIZES))} (blocks per network), "
                         f"got {value!r}")
    if n_hidden is not None and not cluster_fits(n_hidden, value):
        raise ValueError(f"cluster: {value} blocks cannot share {n_hidden} hidden units (a block would own none)")
    return int(value)


def _check_size(value, name, upper=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name}: expected at most {upper}, got {value}")
    return int(value)


def units_per_block(n_hidden, cluster):
    """Hidden units each block of a ``cluster``-block network owns (the last may own fewer)."""
    return -(-int(n_hidden) // int(cluster))


def cluster_fits(n_hidden, cluster):
    """Whether every block of a ``cluster``-block network owns at least one of ``n_hidden`` units."""
    return (cluster - 1) * units_per_block(n_hidden, cluster) < n_hidden


def fused_layout(n_in, n_hidden, n_out, batch_size, threads=FUSED_THREADS, input_dtype="uint8", dtype="float32",
                 cluster=1):
    """How the fused kernel splits its work for one configuration: the template's layout macros
    (their meaning is documented in fused_epoch.cu). Register budgets are halved for float64.
    ``cluster``: blocks per network; each block's share of the hidden units is laid out."""
    wide = 2 if np.dtype(dtype) == np.float64 else 1
    n_hidden = units_per_block(n_hidden, cluster)

    def up(x, d):
        return -(-x // d) * d

    warps = threads // 32
    sb = min(batch_size, 10)                                 # samples per register block
    upw = max(1, min(n_hidden, (64 if wide == 1 else 16) // sb))  # units per block: <= 64 sums per lane
    blocks = -(-n_hidden // upw) * -(-batch_size // sb)
    parts = max(1, min((warps - 1) // blocks, -(-n_in // 32)))  # warps sharing one block's inputs
    cf = upw * sb
    for _ in range(5):
        cf = -(-cf // 2)
    ti = 4 if n_in % 4 == 0 else 1                           # update: consecutive inputs per thread
    budget = (60 if threads <= 512 else 24) // wide          # gradient accumulators per thread
    tj = max(1, min(n_hidden, budget // ti))
    jg = -(-n_hidden // tj)
    ng = n_in // ti
    xt = np.dtype(input_dtype)
    lpr = 4 if xt == np.uint8 and n_in % 4 == 0 else 1
    nu = n_in // lpr
    staged = batch_size * (n_in * xt.itemsize + n_out * np.dtype(dtype).itemsize)  # staging bytes
    pref = int((lpr == 4 or xt != np.uint8) and staged <= 16384)
    return dict(SB=sb, UPW=upw, P=parts, CF=cf, BSR=max(up(batch_size, sb), up(batch_size, 4)),
                BSD=up(batch_size, 4), VX=2 if n_in % 2 == 0 else 1, TI=ti, TJ=tj, NG=ng, JG=jg,
                LPR=lpr, NU=nu, PREF=pref)


LAYOUT_MACROS = ("SB", "UPW", "P", "CF", "BSR", "BSD", "VX", "TI", "TJ", "NG", "JG", "LPR", "NU", "PREF")
FUSED_MAX_OUT = 32  # outputs: one lane each in the kernel's output phase



def fused_epoch_shared_bytes(n_in, n_hidden, n_out, batch_size, dtype, threads=FUSED_THREADS, input_dtype="uint8",
                             cluster=1):
    """Dynamic shared memory one block of the fused kernel needs (the layout described in
    fused_epoch.cu)."""
    lay = fused_layout(n_in, n_hidden, n_out, batch_size, threads, input_dtype, dtype, cluster)
    hl = units_per_block(n_hidden, cluster)
    words = (hl * lay["BSD"] + lay["BSR"] * n_in + hl * n_in + hl * n_out + hl
             + n_out + batch_size * n_out + lay["P"] * batch_size * hl + 2 * batch_size * hl
             + batch_size * n_out + 2 * batch_size * n_out + 2 * n_out + lay["PREF"] * batch_size * n_out)
    staging = lay["PREF"] * batch_size * n_in * np.dtype(input_dtype).itemsize  # xst, in load units
    return words * np.dtype(dtype).itemsize + staging + 16 * batch_size + 64  # + two batches' indices (int64),
    #                                                                         the member's 8 pointers


def render_fused_epoch(n_in, n_hidden, n_out, batch_size, dtype="float32", input_dtype="uint8",
                       hidden="sigmoid", output="sigmoid", loss="quadratic", threads=FUSED_THREADS, cluster=1):
    """The CUDA source of the fused epoch kernel for one configuration (sizes and types are
    substituted as text). ``input_dtype``: the stored training inputs' dtype (uint8 or ``dtype``).
    ``cluster``: blocks per network (1, 2, 4 or 8; above 1 a thread-block cluster, sm_90, splits
    the hidden units over that many SMs)."""
    n_in = _check_size(n_in, "n_in")
    n_hidden = _check_size(n_hidden, "n_hidden")
    n_out = _check_size(n_out, "n_out", FUSED_MAX_OUT)
    batch_size = _check_size(batch_size, "batch_size", FUSED_MAX_BATCH)
    threads = _check_size(threads, "threads", 1024)
    if threads % 32:
        raise ValueError(f"threads: expected a multiple of 32 (whole warps), got {threads}")
    cluster = _check_cluster(cluster, n_hidden)
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    xt = np.dtype(input_dtype)
    if xt not in (np.dtype(np.uint8), dt):
        raise ValueError(f"input_dtype: expected 'uint8' or the network's dtype {dt.name!r}, got {xt.name!r}")
    _check_choice(hidden, "hidden", tuple(a for a in ACTIVATIONS if a != "softmax"))
    _check_choice(output, "output", ACTIVATIONS)
    _check_choice(loss, "loss", LOSSES)
    layout = fused_layout(n_in, n_hidden, n_out, batch_size, threads, xt, dt, cluster)
    values = dict(
        T=C_TYPES[dt], XT=C_TYPES[xt], LT="unsigned int" if layout["LPR"] == 4 else C_TYPES[xt],
        N0=n_in, H=n_hidden, CL=cluster, HL=units_per_block(n_hidden, cluster), K=n_out, BS=batch_size, NT=threads,
        HID_ACT=ACT_CODES[hidden],
        OUT_ACT=ACT_CODES[output], LOSS=LOSS_CODES[loss], CANCEL=int((output, loss) in CANCELLING),
        OPS_DEFINES=ops.cuda_defines(), **layout)
    return string.Template(_source()).substitute(values)


def render_batch_kernels(dtype="float32", input_dtype="uint8"):
    """The CUDA source of the batched path's kernels (batch_step.cu after the math section)."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    xt = np.dtype(input_dtype)
    if xt not in (np.dtype(np.uint8), dt):
        raise ValueError(f"input_dtype: expected 'uint8' or the network's dtype {dt.name!r}, got {xt.name!r}")
    with open(BATCH_SOURCE, encoding="utf-8") as f:
        text = string.Template(f.read()).substitute(T=C_TYPES[dt], XT=C_TYPES[xt])
    return math_preamble() + text


def _config_shared_bytes(config):
    return fused_epoch_shared_bytes(config["n_in"], config["n_hidden"], config["n_out"], config["batch_size"],
                                    config["dtype"], config["threads"], config["input_dtype"], config["cluster"])


_BATCH_FUNCTIONS = {}


def _batch_functions(dtype, input_dtype):
    """The batched path's compiled kernels for one (dtype, input dtype), by name."""
    key = (np.dtype(dtype).name, np.dtype(input_dtype).name)
    if key not in _BATCH_FUNCTIONS:
        module = cp.RawModule(code=render_batch_kernels(*key))
        _BATCH_FUNCTIONS[key] = {name: module.get_function(name) for name in (
            "gather_inputs", "gather_targets", "bias_act", "out_delta", "loss_grad", "loss_terms", "act_back",
            "update_all", "update_one")}
    return _BATCH_FUNCTIONS[key]


def _grid(total):
    return (max(1, min(-(-int(total) // BATCH_THREADS), 4096)),)


def _describe(a):
    t = type(a)
    return f"{t.__module__}.{t.__name__}"


class CupyBackend(Backend):
    """GPU backend on CuPy. ``fused``: False disables the whole-epoch kernel and the batched epoch
    (the network's generic per-batch path only);
    ``threads``: threads of the fused kernel's block (a multiple of 32, at most 1024);
    ``cluster``: blocks (SMs) per network in the fused kernel, 1, 2, 4 or 8: above 1 a
    thread-block cluster (sm_90: H100/H200) splits the hidden units over that many SMs; a network
    with too few hidden units for that many blocks takes the largest size that still gives every
    block one."""

    name = "cupy"

    def __init__(self, dtype="float32", fused=True, threads=FUSED_THREADS, cluster=1):
        Backend.__init__(self, dtype)
        self.threads = _check_size(threads, "threads", 1024)
        if self.threads % 32:
            raise ValueError(f"threads: expected a multiple of 32 (whole warps), got {threads}")
        self.cluster = _check_cluster(cluster)
        self.fused = bool(fused)
        _import_cupy()
        self._fused_kernels = {}
        self._max_shared = None
        self._hp = {}  # hyperparameter vectors on the device, by value

    def __repr__(self):
        return f"CupyBackend(dtype={self.dtype.name!r}, fused={self.fused}, cluster={self.cluster})"

    @staticmethod
    def is_available():
        """Whether CuPy imports and sees at least one GPU (never raises)."""
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:
            return False

    @staticmethod
    def info():
        """The device and the versions in use."""
        _import_cupy()
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        return {
            "cupy": cp.__version__, "device": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": dev.compute_capability,
            "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cp.cuda.runtime.driverGetVersion(),
            "max_shared_per_block_optin": dev.attributes.get("MaxSharedMemoryPerBlockOptin"),
        }

    # --- arrays ---------------------------------------------------------------------------
    def _device(self, a, name):
        """``a`` when it is a CuPy array; TypeError (no silent copy) otherwise."""
        if not isinstance(a, cp.ndarray):
            raise TypeError(f"{name}: expected a CuPy array on the 'cupy' backend, got {_describe(a)}; "
                            f"move host data explicitly with backend.asarray(...)")
        return a

    def asarray(self, a, dtype=None):
        return cp.ascontiguousarray(cp.asarray(a, dtype=self.dtype if dtype is None else dtype))

    def to_numpy(self, a):
        return cp.asnumpy(a) if isinstance(a, cp.ndarray) else np.asarray(a)

    def zeros(self, shape):
        return cp.zeros(shape, dtype=self.dtype)

    def prepare_data(self, X):
        """The training inputs on the GPU for a whole fit: the one host-to-device copy of X (uint8
        stays uint8, other data becomes ``self.dtype``); CuPy arrays are kept as they are.
        scipy.sparse inputs are made dense on the way (the sparse engines are the CPU's)."""
        if is_sparse(X):
            X = X.toarray()
        if X.dtype == np.uint8:
            return cp.ascontiguousarray(cp.asarray(X))
        return self.asarray(X)

    def gather(self, X, idx, scale):
        """Rows ``X[idx] * scale`` as ``self.dtype``; ``X`` must be device data (``prepare_data``
        or ``asarray``), ``idx`` may be NumPy (a small copy) or CuPy."""
        self._device(X, "X")
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D array, got shape {X.shape}")
        if X.dtype not in (np.uint8, self.dtype):
            X = X.astype(self.dtype)
        if not X.flags.c_contiguous:
            X = cp.ascontiguousarray(X)
        if not isinstance(idx, cp.ndarray):  # (cp.asarray costs ~30 us even on a CuPy array)
            idx = cp.asarray(idx)
        idx = cp.ascontiguousarray(idx, dtype=cp.int64)
        out = cp.empty((idx.shape[0], X.shape[1]), dtype=self.dtype)
        if out.size:
            self._launch(X.dtype, "gather_inputs", out.size, X, idx, np.int64(out.size), np.int32(X.shape[1]),
                         np.float64(scale), out)
        return out

    # --- layer math: cuBLAS products, batch_step.cu's kernels between them ----------------------
    def _launch(self, input_dtype, name, total, *args):
        """Launch kernel ``name`` of batch_step.cu over ``total`` elements."""
        _batch_functions(self.dtype, input_dtype)[name](_grid(total), (BATCH_THREADS,), args)

    def _contiguous(self, a, name):
        return cp.ascontiguousarray(self._device(a, name), dtype=self.dtype)

    def forward(self, x, W, b, activation):
        self._device(x, "x")
        self._device(W, "W")
        b = self._contiguous(b, "b")
        z = cp.ascontiguousarray(x @ W, dtype=self.dtype)  # cuBLAS
        if activation.name == "softmax":
            z += b
            e = cp.exp(z - z.max(axis=1, keepdims=True))
            return z, e / e.sum(axis=1, keepdims=True)
        a = cp.empty_like(z)
        if z.size:
            self._launch(self.dtype, "bias_act", z.size, z, b, a, np.int64(z.size), np.int32(W.shape[1]),
                         np.int32(ACT_CODES[activation.name]), np.float64(activation.slope))
        return z, a

    def activation_backward(self, g, z, a, activation):
        g = self._contiguous(g, "g")
        if activation.name == "softmax":
            return a * (g - cp.sum(g * a, axis=1, keepdims=True))
        d = cp.empty_like(g)
        if g.size:
            self._launch(self.dtype, "act_back", g.size, g, self._contiguous(z, "z"), self._contiguous(a, "a"), d,
                         np.int64(g.size), np.int32(ACT_CODES[activation.name]), np.float64(activation.slope))
        return d

    def output_delta(self, z, a, y, activation, loss):
        a, y = self._contiguous(a, "a"), self._contiguous(y, "y")
        if (activation.name, loss) in CANCELLING:
            return a - y  # the derivative of the activation cancels
        n_out = a.shape[1]
        if activation.name == "softmax":
            g = cp.empty_like(a)
            if a.size:
                self._launch(self.dtype, "loss_grad", a.size, a, y, g, np.int64(a.size), np.int32(n_out),
                             np.int32(LOSS_CODES[loss]))
            return self.activation_backward(g, z, a, activation)
        d = cp.empty_like(a)
        if a.size:
            self._launch(self.dtype, "out_delta", a.size, self._contiguous(z, "z"), a, y, d,
                         cp.zeros(1, cp.float64), np.int32(0), np.int64(a.size), np.int32(n_out),
                         np.int32(ACT_CODES[activation.name]), np.int32(LOSS_CODES[loss]), np.int32(0),
                         np.float64(activation.slope))
        return d

    def loss(self, a, y, loss):
        return float(self.loss_sum(a, y, loss))

    def loss_sum(self, a, y, loss):
        a, y = self._contiguous(a, "a"), self._contiguous(y, "y")
        terms = cp.zeros(a.size, cp.float64)
        if a.size:
            self._launch(self.dtype, "loss_terms", a.size, a, y, terms, np.int64(a.size), np.int32(LOSS_CODES[loss]))
        total = terms.sum()  # a 0-d float64 array, left on the GPU
        return total / a.shape[1] if loss == "mse" else total

    def index_array(self, order):
        return cp.asarray(np.ascontiguousarray(order, dtype=np.int64))  # one copy per epoch

    def backward(self, x, W, delta, need_dx=True):
        self._device(x, "x")
        self._device(delta, "delta")
        dW = x.T @ delta  # cuBLAS, the transposed operand read in place
        db = delta.sum(axis=0)
        dx = delta @ W.T if need_dx else None
        return dW, db, dx

    def _hyperparameters(self, hp):
        """The hyperparameter vector on the device (kept per value: no copy per batch)."""
        key = tuple(float(v) for v in np.asarray(hp, dtype=np.float64))
        dev = self._hp.get(key)
        if dev is None:
            if len(self._hp) > 256:
                self._hp.clear()
            dev = self._hp[key] = cp.asarray(np.array(key, dtype=np.float64))
        return dev

    def update(self, p, g, state, opt, hp, scale, decayed):
        self._device(p, "p")
        self._device(g, "g")
        self._check_update(p, g, state, opt, hp)
        if state is not None:
            self._device(state, "state")
        if not (p.flags.c_contiguous and (state is None or state.flags.c_contiguous)):  # any layout, in place
            pc, sc = cp.ascontiguousarray(p), None if state is None else cp.ascontiguousarray(state)
            self.update(pc, g, sc, opt, hp, scale, decayed)
            p[...] = pc
            if state is not None:
                state[...] = sc
            return
        g = cp.ascontiguousarray(g, dtype=self.dtype)
        if p.size:
            self._launch(self.dtype, "update_one", p.size, p, g, p if state is None else state, np.int64(p.size),
                         np.int32(decayed), np.int32(opt), self._hyperparameters(hp), np.float64(scale))

    # --- the fused epoch ------------------------------------------------------------------
    def _shared_limit(self):
        """The most dynamic shared memory one block may opt in to on this GPU (bytes)."""
        if self._max_shared is None:
            self._max_shared = int(cp.cuda.Device().attributes["MaxSharedMemoryPerBlockOptin"])
        return self._max_shared

    def fused_config(self, layers, loss, X, Y, batch_size):
        """The fused kernel's render arguments for this configuration, or None when it is not
        covered (then the per-batch path runs)."""
        if not self.fused or len(layers) != 2 or loss not in LOSS_CODES:
            return None
        if layers[1].n_out > FUSED_MAX_OUT:
            return None
        if not 1 <= batch_size <= FUSED_MAX_BATCH:
            return None
        if not (isinstance(X, cp.ndarray) and isinstance(Y, cp.ndarray) and X.ndim == 2 and Y.ndim == 2):
            return None
        if X.dtype not in (np.uint8, self.dtype) or Y.dtype != self.dtype:
            return None
        if not (X.flags.c_contiguous and Y.flags.c_contiguous):
            return None
        hidden, output = layers[0].activation.name, layers[1].activation.name
        if hidden == "softmax":
            return None
        for layer in layers:
            for p in (layer.W, layer.b):
                if not (isinstance(p, cp.ndarray) and p.dtype == self.dtype and p.flags.c_contiguous):
                    return None
        n_in, n_hidden, n_out = layers[0].n_in, layers[0].n_out, layers[1].n_out
        if X.shape[1] != n_in or Y.shape[1] != n_out:
            return None
        cluster = max(c for c in CLUSTER_SIZES if c <= self.cluster and cluster_fits(n_hidden, c))
        need = fused_epoch_shared_bytes(n_in, n_hidden, n_out, batch_size, self.dtype, self.threads, X.dtype, cluster)
        if need > self._shared_limit():
            return None
        return dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out, batch_size=int(batch_size),
                    dtype=self.dtype.name, input_dtype=X.dtype.name, hidden=hidden, output=output,
                    loss=loss, threads=self.threads, cluster=cluster)

    def _fused_kernel(self, config):
        key = tuple(sorted(config.items()))
        kernel = self._fused_kernels.get(key)
        if kernel is None:
            kernel = cp.RawKernel(render_fused_epoch(**config), "fused_epoch")
            shared = _config_shared_bytes(config)
            kernel.max_dynamic_shared_size_bytes = shared  # the opt-in above 48 KB
            self._fused_kernels[key] = kernel
        return kernel

    # --- the engines, on a training plan (kernels/plan.py's LayerPlan) --------------------------
    def make_plan(self, networks, loss, optimizers, X, Y, batch_size=None):
        """The plan of K >= 1 networks when the fused kernel covers every member (one launch per
        epoch, a block per member) or the batched epoch covers every member (members one after
        another), else None (the per-batch loop). The parameters stay in the layers, in their own
        layout."""
        bs = X.shape[0] if batch_size is None else min(batch_size, X.shape[0])
        configs = [self.fused_config(layers, loss, X, Y, bs) for layers in networks]
        config = configs[0] if all(c is not None and c == configs[0] for c in configs) else None
        if config is None and not all(self.batched_covers(layers, X, Y) for layers in networks):
            return None
        return LayerPlan(networks, loss, optimizers, fused=config, batch_size=bs, checks_finite=config is not None)

    def engines(self):
        """``cupy-fused`` (the whole-epoch kernel, one block), ``cupy-fused-members`` (the same
        kernel, an ensemble's members in one launch, a block each), ``cupy-batched`` (cuBLAS
        products and batch_step.cu's kernels, buffers made once per epoch; members one after
        another), ``cupy-per-batch``."""
        return (Engine("cupy-fused", lambda plan: plan is not None and plan.fused is not None and plan.n_members == 1),
                Engine("cupy-fused-members", lambda plan: plan is not None and plan.fused is not None),
                Engine("cupy-batched", lambda plan: plan is not None and plan.fused is None),
                *Backend.engines(self))

    def train_plan(self, plan, X, scale, Y, orders, batch_size, members=None):
        """One epoch of the plan's members (member k over ``X[orders[k]]``, with its
        hyperparameters ``plan.hp[k]``); the summed loss per member (NaN for those not trained)."""
        totals = np.full(plan.n_members, np.nan)
        members = list(range(plan.n_members)) if members is None else list(members)
        if not members:
            return totals
        if plan.fused is not None:
            totals[members] = self._fused_epoch(plan.fused, [plan.networks[k] for k in members], X, scale, Y,
                                                np.asarray(orders)[members], [plan.optimizers[k] for k in members],
                                                plan.hp[members])
            return totals
        for k in members:
            totals[k] = self._batched_epoch(plan.networks[k], plan.loss, X, scale, Y, orders[k], batch_size,
                                            plan.optimizers[k], plan.hp[k])
        return totals

    def warmup_plan(self, plan, X, Y, batch_size):
        return self.warmup(plan.networks[0], plan.loss, X, Y, batch_size, plan.optimizers[0])

    def train_epoch(self, layers, loss, X, scale, Y, order, batch_size, opt):
        """One epoch of one network through the fused kernel or the batched epoch (None when
        neither covers it); what ``train_plan`` runs, for code that drives epochs itself."""
        config = self.fused_config(layers, loss, X, Y, min(batch_size, len(order)))
        if config is None:
            return self._batched_epoch(layers, loss, X, scale, Y, order, batch_size, opt)
        return float(self._fused_epoch(config, [layers], X, scale, Y, np.asarray(order)[None], [opt])[0])

    def _fused_epoch(self, config, networks, X, scale, Y, orders, optimizers, hps=None):
        """One epoch of K networks (each a list of two layers covered by ``config``) in ONE launch
        of the fused kernel, block k training member k over ``X[orders[k]]`` with optimiser
        ``optimizers[k]`` and hyperparameters ``hps[k]`` (default: the optimisers' own). Per
        member: a row of 8 pointers (its parameters and optimiser state), its frozen bits. Returns
        the summed loss per member (one synchronisation)."""
        hps = np.array([opt.hyperparameters() for opt in optimizers]) if hps is None else hps
        kernel = self._fused_kernel(config)
        shared = _config_shared_bytes(config)
        rows, frozen = [], []
        for layers, opt in zip(networks, optimizers):
            l0, l1 = layers
            row = [p.data.ptr for p in (l0.W, l0.b, l1.W, l1.b)]
            for layer, name in ((l0, "W"), (l0, "b"), (l1, "W"), (l1, "b")):
                # the optimiser's state; the parameter itself (never read) when it keeps none or is frozen
                s = None if name in layer.frozen else opt.state_of(layer, name)
                row.append(getattr(layer, name).data.ptr if s is None else self._device(s, "state").data.ptr)
            rows.append(row)
            frozen.append(("W" in l0.frozen) * 1 | ("b" in l0.frozen) * 2 | ("W" in l1.frozen) * 4
                          | ("b" in l1.frozen) * 8)
        K = len(rows)
        orders = cp.asarray(np.ascontiguousarray(orders, dtype=np.int64).reshape(K, -1))  # once per epoch
        parts = cp.zeros((K, config["threads"]), dtype=cp.float64)
        unfinite = cp.zeros(K, dtype=cp.int32)
        opt = optimizers[0]
        args = (X, Y, orders, np.int32(orders.shape[1]), np.float64(scale),
                cp.asarray(np.array(rows, dtype=np.uint64)), np.int32(opt.code),
                cp.asarray(np.ascontiguousarray(hps, dtype=np.float64).reshape(K, -1)),
                np.int32(opt.reduction == "mean"), cp.asarray(np.array(frozen, dtype=np.int32)),
                np.float64(networks[0][0].activation.slope), np.float64(networks[0][1].activation.slope), parts,
                unfinite)
        kernel((K * config["cluster"],), (config["threads"],), args, shared_mem=shared)  # a cluster per member
        # a member whose parameters or optimiser state are not all finite gets a NaN loss (so the
        # plan needs no check of its own: LayerPlan.finite); one copy back, the epoch's one sync
        return cp.asnumpy(parts.sum(axis=1) + cp.where(unfinite > 0, np.nan, 0.0))

    # --- the batched epoch: cuBLAS products, one launch for each step between them ----------------
    def batched_covers(self, layers, X, Y):
        """Whether ``_batched_epoch`` handles this network and data (no softmax layer; device data
        and parameters of this backend's dtype, contiguous)."""
        if not self.fused or any(layer.activation.name == "softmax" for layer in layers):
            return False
        if not (isinstance(X, cp.ndarray) and isinstance(Y, cp.ndarray) and X.ndim == 2 and Y.ndim == 2):
            return False
        if X.dtype not in (np.uint8, self.dtype) or Y.dtype != self.dtype:
            return False
        if not (X.flags.c_contiguous and Y.flags.c_contiguous):
            return False
        if X.shape[1] != layers[0].n_in or Y.shape[1] != layers[-1].n_out:
            return False
        return all(isinstance(p, cp.ndarray) and p.dtype == self.dtype and p.flags.c_contiguous
                   for layer in layers for p in (layer.W, layer.b))

    def _batched_epoch(self, layers, loss, X, scale, Y, order, batch_size, opt, hp=None):
        """One epoch batch by batch without the generic loop's allocations and conversions: the
        epoch's buffers are made once, the products are cuBLAS gemm calls on them (no CuPy array
        dispatch per product), the
        gather, bias + activation, output delta + loss, hidden deltas and every SGD step are one
        RawKernel launch each, and the loss is summed on the GPU once per epoch. The arithmetic is
        the reference's (same formulas, same order of updates). None when not covered."""
        if not self.batched_covers(layers, X, Y):
            return None
        fn = _batch_functions(self.dtype, X.dtype)
        n, dt, n_out = len(order), self.dtype, layers[-1].n_out
        mb = min(batch_size, n)
        index = cp.asarray(np.ascontiguousarray(order, dtype=np.int64))  # once per epoch
        x, y = cp.empty((mb, layers[0].n_in), dt), cp.empty((mb, n_out), dt)
        z = [cp.empty((mb, layer.n_out), dt) for layer in layers]
        a = [cp.empty((mb, layer.n_out), dt) for layer in layers]
        d = [cp.empty((mb, layer.n_out), dt) for layer in layers]
        g = [None] + [cp.empty((mb, layer.n_in), dt) for layer in layers[1:]]  # dL/da of the layer below
        dW = [cp.empty_like(layer.W) for layer in layers]
        db = [cp.empty_like(layer.b) for layer in layers]
        ones = cp.ones(mb, dt)
        loss_acc = cp.zeros((mb, n_out), cp.float64)
        rows = []
        for layer, gW, gb in zip(layers, dW, db):
            for name, p, grad in (("W", layer.W, gW), ("b", layer.b, gb)):
                if name in layer.frozen:
                    continue
                st = opt.state_of(layer, name)  # zeros on first use; None: the optimiser keeps none
                rows.append((p.data.ptr, grad.data.ptr, (p if st is None else st).data.ptr, p.size, int(name == "W")))
        hp = self._hyperparameters(opt.hyperparameters() if hp is None else hp)
        code = np.int32(opt.code)
        table = cp.asarray(np.array(rows, dtype=np.int64).reshape(-1, 5))
        sgd_grid = (_grid(max([r[3] for r in rows], default=1))[0], len(rows))
        codes = [np.int32(ACT_CODES[layer.activation.name]) for layer in layers]
        slopes = [np.float64(layer.activation.slope) for layer in layers]
        cancel = np.int32((layers[-1].activation.name, loss) in CANCELLING)
        block, last = (BATCH_THREADS,), len(layers) - 1
        # row-major products through cuBLAS's column-major gemm: C (r x c) = A @ B is C^T = B^T A^T
        try:
            from cupy_backends.cuda.libs import cublas
        except ImportError:  # older CuPy
            from cupy.cuda import cublas

        handle = cp.cuda.device.get_cublas_handle()
        cublas.setStream(handle, cp.cuda.get_current_stream().ptr)
        gemm = cublas.sgemm if dt == np.float32 else cublas.dgemm
        N, T = cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T
        one, zero = np.ones(1, dt), np.zeros(1, dt)
        alpha, beta = one.ctypes.data, zero.ctypes.data
        ptr = lambda t: t.data.ptr  # noqa: E731
        n_in0 = layers[0].n_in
        for k, start in enumerate(range(0, n, batch_size)):
            m = min(batch_size, n - start)
            idx = index[start:start + m]
            fn["gather_inputs"](_grid(m * n_in0), block, (X, idx, np.int64(m * n_in0), np.int32(n_in0),
                                                          np.float64(scale), x))
            fn["gather_targets"](_grid(m * n_out), block, (Y, idx, np.int64(m * n_out), np.int32(n_out), y))
            inputs = x
            for i, layer in enumerate(layers):  # z = inputs @ W
                gemm(handle, N, N, layer.n_out, m, layer.n_in, alpha, ptr(layer.W), layer.n_out, ptr(inputs),
                     layer.n_in, beta, ptr(z[i]), layer.n_out)
                fn["bias_act"](_grid(m * layer.n_out), block, (z[i], layer.b, a[i], np.int64(m * layer.n_out),
                                                               np.int32(layer.n_out), codes[i], slopes[i]))
                inputs = a[i]
            fn["out_delta"](_grid(m * n_out), block, (z[last], a[last], y, d[last], loss_acc, np.int32(1),
                                                      np.int64(m * n_out),
                                                      np.int32(n_out), codes[last], np.int32(LOSS_CODES[loss]),
                                                      cancel, slopes[last]))
            for i in range(last, -1, -1):
                layer, inputs = layers[i], (a[i - 1] if i > 0 else x)
                # dW = inputs^T @ d, db = ones^T @ d
                gemm(handle, N, T, layer.n_out, layer.n_in, m, alpha, ptr(d[i]), layer.n_out, ptr(inputs),
                     layer.n_in, beta, ptr(dW[i]), layer.n_out)
                gemm(handle, N, N, layer.n_out, 1, m, alpha, ptr(d[i]), layer.n_out, ptr(ones), m, beta,
                     ptr(db[i]), layer.n_out)
                if i > 0:  # g = d @ W^T, with the weights before their update, as the reference
                    gemm(handle, T, N, layer.n_in, m, layer.n_out, alpha, ptr(layer.W), layer.n_out, ptr(d[i]),
                         layer.n_out, beta, ptr(g[i]), layer.n_in)
                    fn["act_back"](_grid(m * layer.n_in), block, (g[i], z[i - 1], a[i - 1], d[i - 1],
                                                                  np.int64(m * layer.n_in), codes[i - 1],
                                                                  slopes[i - 1]))
            if rows:
                fn["update_all"](sgd_grid, block, (table, code, hp, np.float64(opt.reduce(m)), np.int64(k)))
        total = float(loss_acc.sum())  # the one synchronisation of the epoch
        return total / n_out if loss == "mse" else total

    def warmup(self, layers, loss, X, Y, batch_size, opt):
        """Compile (or load from CuPy's on-disk cache) the fused kernel this configuration needs,
        so that timed epochs exclude it. Returns seconds."""
        t0 = time.perf_counter()
        config = self.fused_config(layers, loss, X, Y, min(batch_size, X.shape[0]))
        if config is not None:
            self._fused_kernel(config).compile()
        elif self.batched_covers(layers, X, Y):
            _batch_functions(self.dtype, X.dtype)
            cp.matmul(cp.ones((2, 2), self.dtype), cp.ones((2, 2), self.dtype))  # cuBLAS's handle
        cp.cuda.Device().synchronize()
        return time.perf_counter() - t0
