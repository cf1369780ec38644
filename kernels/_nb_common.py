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

Numba links a callee's code into each caller, where it is optimised and compiled once more, at
every level above it, and again for each other kernel that uses it (the blocked products of a
fit were compiled four times, and once more for each of the two-thread, sparse and per-batch
kernels). The big shared kernels are therefore compiled ``separately``: once per signature, as a
function of their own, which the other kernels call by a symbol (an intrinsic: ``_Separate``):
the blocked products, a layer's update, the optimiser's rule, the activations, the output
deltas and the sparse epoch. The deltas of the layer below (``backprop_units``) are linked into
the one-thread epoch and called apart from the others (``backprop_apart``): each way round was
measured slower (see ``_nb_blocked.py``).
A cached caller's reload hooks load them (and define their symbols) before its code is linked,
and a cached kernel of ours that would call a symbol not defined then is compiled again instead
(``_symbols_defined``). Those kernels are compiled without Numba's reference counting unless
they allocate (``nrt=True``): an increment and a decrement of every array argument on each call
cost the book's batch-10 epoch about 6%. Small functions used inside loops (exp, the activations'
derivatives) stay ordinary ``@njit`` functions that LLVM inlines.

Loading a kernel from that cache does not first make Numba load its typing and lowering
registries (every implementation it has, from linear algebra to typed dicts: about 0.45 s, most
of what a cached process paid before it could train); they serve compiling, and a compile
(ours or a user's) still loads them first. A cached kernel needs Numba's runtime (its memory
allocator) and its own machine code, nothing more.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import types as pytypes

import llvmlite.binding as ll
from numba import njit, types
from numba.core import caching, cgutils
from numba.core.runtime.nrt import rtsys
from numba.core.extending import _Intrinsic

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
            return _keep_reload_init(stock(self, sig, target_context))
        rtsys.initialize(target_context)  # what running compiled code needs (what refresh does first)
        with self._guard_against_spurious_io_errors():
            if not self._enabled:
                return None
            data = self._cache_file.load(self._index_key(sig, target_context.codegen()))
            if data is None or not _symbols_defined(data):
                return None  # (not cached, or calls a kernel it would not load: compiled again)
            return _keep_reload_init(self._impl.rebuild(target_context, data))

    load_overload.fastbp = True
    caching.Cache.load_overload = load_overload


def _symbols_defined(data):
    """Run a cached function's reload hooks (which load the separately compiled kernels it
    calls), then check that every kernel symbol its machine code calls is now defined: linked
    against an undefined one, it would call address 0. ``data``: Numba's pickled compile result
    (library data first, the reload hooks eighth)."""
    try:
        (_, kind, (code, _)), reload_init = data[0], data[7]
    except (TypeError, ValueError, IndexError):
        return True  # another layout (a Numba this code does not know): nothing to check
    for hook in reload_init:
        hook()  # (rebuild runs them again: each is done once)
    wanted = set(_SYMBOL.findall(code)) if kind == "object" else set()
    return wanted <= _DEFINED


def _keep_reload_init(cres):
    """A function loaded from the cache gets its reload hooks back on its library. (Numba keeps
    them on the compile result only, and a kernel compiled later that links this one inherits the
    hooks of its library: without them, a cached caller of a ``separately`` kernel compiled in a
    process that had loaded its callees from the cache would not load that kernel first, and would
    call an undefined symbol.)"""
    if cres is not None and cres.reload_init:
        cres.library._reload_init.update(cres.reload_init)
    return cres


_install_fast_load()


# --- kernels compiled once, called by symbol -------------------------------------------------------
_SYMBOL = re.compile(rb"fastbp\.[0-9a-f]{12}\.[A-Za-z0-9_.]+")  # a separately compiled kernel's symbol
_DEFINED = set()  # the symbols defined in this process (bytes)


def separately(fn=None, *, nrt=False, name=None):
    """``fn`` compiled as a kernel of its own, once per signature, and called from other kernels by
    a symbol instead of being linked into them. (Numba links a callee's code into each caller and
    optimises and compiles it once more there, at every level above it: the blocked products were
    compiled four times for one fit, and once more for each other epoch kernel that uses them.)
    Returns the intrinsic that the kernels call; called from Python, it runs the compiled function
    (``.dispatcher``). The symbol is a name of this version of the kernels, the signature and the
    function (``_Separate.symbol``); a caller loaded from the cache first loads what it calls
    (``_Load``, Numba's reload hook), so the symbol is defined before the caller's code is linked.
    ``nrt``: with Numba's reference counting (a kernel that allocates); ``name``: ``fn`` is an
    ``@njit`` kernel's Python function, compiled separately under this name as well (the module
    must bind the result to that name)."""
    if fn is None:
        return lambda fn: separately(fn, nrt=nrt, name=name)
    if name is not None:  # a second way to compile an ordinary kernel: a copy under a name of its own
        fn = pytypes.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
        fn.__qualname__ = name
    return _Separate(fn, nrt).call


class _Separate:
    def __init__(self, fn, nrt):
        self.dispatcher = njit(**JIT, _nrt=nrt)(fn)
        self.module, self.name = fn.__module__, fn.__name__
        self.symbols = {}  # argument types -> (symbol, return type)
        self.call = self._intrinsic(fn)
        self.call.dispatcher = self.dispatcher
        self.call.separate = self

    def symbol(self, argtypes):
        digest = hashlib.sha256(repr(argtypes).encode()).hexdigest()[:16]
        return f"fastbp.{KERNELS_STAMP[:12]}.{self.module.rsplit('.', 1)[-1]}.{self.name}.{digest}"

    def ensure(self, argtypes):
        """Compile (or load) the kernel for ``argtypes`` and define its symbol; (symbol, return type)."""
        got = self.symbols.get(argtypes)
        if got is None:
            self.dispatcher.compile(argtypes)
            cres = self.dispatcher.overloads[argtypes]
            name = self.symbol(argtypes)
            ll.add_symbol(name, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
            _DEFINED.add(name.encode())
            got = self.symbols[argtypes] = (name, cres.signature.return_type)
        return got

    def _intrinsic(self, fn):
        separate = self

        def typer(args):
            argtypes = tuple(types.unliteral(a) for a in args)
            name, restype = separate.ensure(argtypes)

            def codegen(context, builder, sig, llargs):
                fnty = context.call_conv.get_function_type(sig.return_type, sig.args)
                callee = cgutils.get_or_insert_function(builder.module, fnty, name)
                status, result = context.call_conv.call_function(builder, callee, sig.return_type, sig.args, llargs)
                with cgutils.if_unlikely(builder, status.is_error):
                    context.call_conv.return_status_propagate(builder, status)
                context.active_code_library._reload_init.add(_Load(separate.module, separate.name, argtypes))
                return result
            return restype(*argtypes), codegen

        # an intrinsic with fn's own parameters (Numba's lowering cannot pass *args to one)
        params = ", ".join(inspect.signature(fn).parameters)
        scope = {"typer": typer}
        exec(f"def {fn.__name__}(typingctx, {params}):\n    return typer(({params},))", scope)
        call = _Call(fn.__name__, scope[fn.__name__])
        call._register()
        return call


class _Call(_Intrinsic):
    """The intrinsic that calls a separately compiled kernel; from Python, the kernel itself."""

    def __call__(self, *args):
        return self.dispatcher(*args)


class _Load:
    """Loads (or compiles) a separately compiled kernel for one signature and defines its symbol:
    run by Numba before it links a cached caller's code (``reload_init``; pickled with it)."""

    def __init__(self, module, name, argtypes):
        self.module, self.name, self.argtypes = module, name, argtypes

    def __call__(self):
        getattr(importlib.import_module(self.module), self.name).separate.ensure(self.argtypes)

    def __eq__(self, other):
        return isinstance(other, _Load) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def _key(self):
        return self.module, self.name, self.argtypes
