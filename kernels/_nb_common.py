"""What the compiled kernels of the numba backend (imported only when that backend is asked for)
share: ``JIT``, the options every kernel is compiled with, and the op table's constants
(activation, loss and optimiser codes, cancelling pairs, cross-entropy clip, the hyperparameter
vector's layout) from ``ops.py`` under the short
names the kernels branch on. The kernels, one module per job:

- ``_nb_intrinsics.py``: LLVM intrinsics (bit casts, acquire/release atomics, prefetch, pause,
  sched_yield);
- ``_nb_math.py``: the polynomial exp, the activations and their derivatives, the output deltas
  and the losses;
- ``_nb_optim.py``: the optimisers' update rules, written once for the fused and per-batch paths;
- ``_nb_blocked.py``: the register-blocked products of a layer (forward, weight gradient, backprop)
  and its update (the rule of ``_nb_optim.py`` around the blocked gradient), with the layout of
  the weights they work on;
- ``_nb_epoch.py``: the fused epochs (``train_epoch``; ``train_epoch_2t`` with its barrier) and the
  gather/prefetch of batches into aligned buffers;
- ``_nb_sparse.py``: the fused epoch with a sparse first layer;
- ``_nb_batch.py``: the per-batch kernels of the generic path.

(An ensemble's members are trained by these epochs, one call per member from Python: a compiled
loop over the members would link, optimise and compile every kernel below it once more.)

Arithmetic stays in the network's dtype (float32 or float64) with fastmath minus nnan/ninf
(LLVM may reassociate sums, which lets reductions vectorise; NaN/inf still propagate so a
diverging run is still detected).

Every kernel is compiled with ``cache=True``: a new process loads it from disk. Numba keys each
function's cache on its own source file only, while a caller's compiled code contains its callees
from the other modules: after an edit of ``_nb_optim.py`` alone (a ``git pull``, say), the fused
epochs of ``_nb_epoch.py`` would load their old machine code, silently. So the kernels' cache
entries are keyed on ``KERNELS_STAMP`` too, a hash of every source the kernels are compiled from
(the ``_nb_*.py`` modules and ``ops.py``): any edit recompiles them all.

Loading a kernel from that cache does not first make Numba load its typing and lowering
registries (every implementation it has, from linear algebra to typed dicts: about 0.45 s, most
of what a cached process paid before it could train); they serve compiling, and a compile
(ours or a user's) still loads them first. A cached kernel needs Numba's runtime (its memory
allocator) and its own machine code, nothing more.
"""
from __future__ import annotations

import hashlib
import os

from numba.core import caching
from numba.core.runtime.nrt import rtsys

from . import ops

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")

# The activation and loss codes, the cancelling output/loss pairs and the cross-entropy clip, from
# the one table (ops.py); Numba freezes these globals into the compiled code (and its disk cache).
ACT_CODES, LOSS_CODES = ops.ACT_CODES, ops.LOSS_CODES
SIGMOID, TANH, RELU, LEAKY_RELU, IDENTITY, SOFTMAX, EXP = (ops.ACT_CODES[name] for name in (
    "sigmoid", "tanh", "relu", "leaky_relu", "identity", "softmax", "exp"))
QUADRATIC, MSE, BCE, CE, POISSON = (ops.LOSS_CODES[name] for name in (
    "quadratic", "mse", "binary_cross_entropy", "cross_entropy", "poisson"))
# The (activation code, loss code) pairs whose derivatives cancel (delta = a - y). output_delta_row
# tests both inline: that compiles to the same code as the literal test it replaces (a helper
# looping over the pairs compiled differently). A fourth pair in ops.CANCELLING fails to unpack here.
(CANCEL_ACT_1, CANCEL_LOSS_1), (CANCEL_ACT_2, CANCEL_LOSS_2), (CANCEL_ACT_3, CANCEL_LOSS_3) = ops.cancelling_codes()
CLIP32, CLIP64 = ops.LOSS_CLIP["float32"], ops.LOSS_CLIP["float64"]  # the cross-entropy losses' clip
# Below these, deltas and optimiser state (velocities, Adam's moments) are flushed to zero in float32
# (subnormal floats are slow on x86: each operation on one takes a microcode assist); float64 keeps
# them (0.0: nothing is below).
FLUSH32, FLUSH64 = 1e-30, 0.0
# The optimisers' codes and the hyperparameter vector's layout (ops.OPTIMIZER_TABLE, ops.HYPERPARAMETERS).
OPT_SGD, OPT_ADAM = ops.OPTIMIZER_CODES["sgd"], ops.OPTIMIZER_CODES["adam"]
HP_LR, HP_MOMENTUM, HP_WEIGHT_DECAY, HP_NESTEROV, HP_BETA1, HP_BETA2, HP_EPS, HP_STEP, HP_L2 = (
    ops.HP[name] for name in ("lr", "momentum", "weight_decay", "nesterov", "beta1", "beta2", "eps", "step", "l2"))


# --- the disk cache, keyed on every kernel source ----------------------------------------------------
KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))


def kernels_stamp(directory=KERNELS_DIR):
    """A hash of the contents of every source the compiled kernels are built from."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if (name.startswith("_nb_") or name == "ops.py") and name.endswith(".py"):
            with open(os.path.join(directory, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


KERNELS_STAMP = kernels_stamp()


class _KernelsStamp:
    """A cache locator mixin for this folder's kernels: Numba's stamp of the function's own file,
    and KERNELS_STAMP; and a folder of its own per KERNELS_STAMP (``fastbp-<stamp>`` inside Numba's
    cache folder), so that two versions of the kernels never share an index file. (Numba unpickles
    an index before it compares stamps: an index written by another version, whose signatures name
    a module this version no longer has, made every fit fail with ModuleNotFoundError.) Switching
    back to a version finds its cache still there; each folder holds a few MB. Other functions (a
    user's own) are left to Numba's locators."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != KERNELS_DIR:
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return super().get_source_stamp(), KERNELS_STAMP

    def get_cache_path(self):
        return os.path.join(super().get_cache_path(), "fastbp-" + KERNELS_STAMP[:16])


def _install_locators():
    """Put a stamped variant of each of Numba's file-backed cache locators first (once)."""
    stock = caching.CacheImpl._locator_classes
    if any(issubclass(k, _KernelsStamp) for k in stock):
        return
    ours = [type(f"FastbpKernels{k.__name__}", (_KernelsStamp, k), {}) for k in stock
            if issubclass(k, caching._SourceFileBackedLocatorMixin)]
    stock[:0] = ours


_install_locators()


def _install_fast_load():
    """Load this folder's kernels from the cache without Numba's registries (see the module doc):
    ``Cache.load_overload`` refreshes the whole target context before it reads the cache; for a
    function with one of our locators it initialises the runtime only. Other functions are left
    as Numba loads them. (Once.)"""
    stock = caching.Cache.load_overload
    if getattr(stock, "fastbp", False):
        return

    def load_overload(self, sig, target_context):
        if not isinstance(self._impl.locator, _KernelsStamp):
            return stock(self, sig, target_context)
        rtsys.initialize(target_context)  # what running compiled code needs (what refresh does first)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload.fastbp = True
    caching.Cache.load_overload = load_overload


_install_fast_load()
