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
deltas and the deltas of the layer below. (The deltas of the layer below were
linked into the one-thread epoch until their loops ran from 0: with an index from a run-time
``lo`` LLVM left them scalar, and only the linked copy, where ``lo`` was a constant 0, was fast.)
(A first compile may hand them to a helper process, ``compile_ahead.py``: while it runs, a call of
one with a declared return type is typed without compiling it, ``DEFER``, and the caller obtains
it just before its code is linked.) A cached caller's reload hooks load them (and define their symbols) before its code is linked,
and a cached kernel of ours that would call a symbol not defined then is compiled again instead
(``_symbols_defined``). Those kernels are compiled without Numba's reference counting unless
they allocate (``nrt=True``): an increment and a decrement of every array argument on each call
cost the book's batch-10 epoch about 6%. Small functions used inside loops (exp, the activations'
derivatives) stay ordinary ``@njit`` functions that LLVM inlines. A kernel that only other kernels
call is compiled without Numba's Python wrapper (``for_kernels``), and no kernel has Numba's
C-callable one: writing them was a tenth of a first fit's compile.

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
import numpy as np
from numba import njit, types
from numba.core.registry import CPUDispatcher
from numba.core import caching, cgutils, ir
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.ir_utils import build_definitions
from numba.core.untyped_passes import IRProcessing
from numba.core.runtime.nrt import rtsys
from numba.core.errors import TypingError
from numba.core.extending import _Intrinsic

from . import ops

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# (Without Numba's C-callable wrapper: nothing calls a kernel as a C function, and writing one per
# kernel is compile time for nothing.)
JIT = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy", no_cfunc_wrapper=True)
# Small helpers (scalar math, index arithmetic, the gather loops) are inlined by Numba itself, into
# the kernel that calls them: each function Numba compiles on its own costs a fixed 35-80 ms of
# typing, lowering and linking however small it is (measured: 20 one-line callees 0.74 s, inlined
# 0.13 s), and LLVM inlined these anyway.
INLINE = dict(JIT, inline="always")

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


def for_kernels(fn=None, **options):
    """``njit(**JIT, **options)(fn)`` for a function that only other kernels call: compiled without
    Numba's Python wrapper (the code that converts each Python argument, an array's in particular,
    and the result: most of the compile time of a small kernel, 50 ms for one of five arguments).
    Called from Python (a test, a look at one kernel), it runs a copy compiled with the wrapper
    (``<name>__py``, cached on its own: see ``_KernelsOnly``)."""
    if fn is None:
        return lambda fn: for_kernels(fn, **options)
    options = dict(JIT, **options)
    dispatcher = njit(**options, no_cpython_wrapper=True)(fn)
    dispatcher.__class__ = _KernelsOnly
    dispatcher.fastbp_options = options
    return dispatcher


def renamed(fn, name):
    """A copy of Python function ``fn`` under another name (its own cache file: Numba names the
    file after the function), with fn's attributes."""
    copy = pytypes.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    copy.__dict__.update(fn.__dict__)
    return copy


class _KernelsOnly(CPUDispatcher):
    """The dispatcher of a kernel compiled without Numba's Python wrapper (``for_kernels``): other
    kernels type and call it as any; a call from Python, which would jump through the wrapper it
    does not have, runs a twin compiled with one."""

    def __call__(self, *args, **kwargs):
        twin = self.__dict__.get("fastbp_twin")
        if twin is None:
            twin = self.fastbp_twin = njit(**self.fastbp_options)(renamed(self.py_func, self.py_func.__name__ + "__py"))
        return twin(*args, **kwargs)


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
    if any(getattr(k, "fastbp_stamped", False) for k in stock):
        return  # (by name, not class: these modules imported again under another name, ``kernels._nb_common``
        # beside ``fastbp.kernels._nb_common``, must not stamp the stamped locators twice)
    ours = [type(f"FastbpKernels{k.__name__}", (_KernelsStamp, k), {"fastbp_stamped": True}) for k in stock
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


def separately(fn=None, *, nrt=False, name=None, constants=(), returns=None):
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
    must bind the result to that name). ``constants``: parameters (codes) that a caller passing a
    constant (a literal integer: a code bound by ``bound``) gets a kernel of its own for, with
    that value bound (``bound``): only its branch is typed and compiled. ``returns``: the
    kernel's return type (a Numba type), which makes it callable by address as well (``.at``,
    see ``_Separate.at``)."""
    if fn is None:
        return lambda fn: separately(fn, nrt=nrt, name=name, constants=constants, returns=returns)
    if name is not None:  # a second way to compile an ordinary kernel: a copy under a name of its own
        fn = renamed(fn, name)
    separate = _Separate(fn, nrt, tuple(constants), returns=returns)
    separate.call = separate.intrinsic()
    if returns is not None:
        separate.call.at = separate.at_intrinsic()
    return separate.call


# --- kernels specialised on constant codes ------------------------------------------------------------
@register_pass(mutates_CFG=True, analysis_only=False)
class _BindConstants(FunctionPass):
    """Numba pass: the parameters a ``bound`` function fixes become constants (their ``ir.Arg``
    replaced by an ``ir.Const``), before Numba prunes the branches that test constants."""
    _name = "fastbp_bind_constants"

    def __init__(self):
        FunctionPass.__init__(self)

    def run_pass(self, state):
        values = getattr(state.func_id.func, "fastbp_bound", None)
        if not values:
            return False
        for block in state.func_ir.blocks.values():
            for stmt in block.body:
                if isinstance(stmt, ir.Assign) and isinstance(stmt.value, ir.Arg) and stmt.value.name in values:
                    stmt.value = ir.Const(values[stmt.value.name], stmt.value.loc)
        state.func_ir._definitions = build_definitions(state.func_ir.blocks)  # (what the pruning looks up)
        return True


class _BoundCompiler(CompilerBase):
    """Numba's nopython pipeline with ``_BindConstants`` first."""

    def define_pipelines(self):
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.add_pass_after(_BindConstants, IRProcessing)
        pm.finalize()
        return [pm]


def bound(fn, values, nrt=True, python=True):
    """``fn`` (a kernel's Python function) compiled with the parameters named in ``values``
    (name -> int, e.g. an activation code) fixed: a copy of it, named by the values
    (``activate_full__code0``: cached beside ``fn`` under that name), compiled with Numba's
    pipeline plus ``_BindConstants``. Numba prunes the branches that test a constant before it
    types a function, so only the code of these values is typed, lowered and compiled (each
    branch of an activation, loss or optimiser code otherwise costs compile time whether it runs
    or not), and the kernels it passes a bound code to are given it as a constant in turn (see
    ``separately``). The caller still passes every argument (a bound one's value is ignored).
    ``nrt``: Numba's reference counting (see ``separately``); ``python=False``: only kernels call
    it (``for_kernels``). Memoised: one per values."""
    values = tuple(sorted(values.items()))
    key = (fn, values, nrt, python)
    got = _BOUND.get(key)
    if got is None:
        copy = renamed(fn, fn.__name__ + "__" + "_".join(f"{k}{v}".replace("-", "m") for k, v in values))
        copy.fastbp_bound = dict(values)
        jit = njit(**JIT, _nrt=nrt, pipeline_class=_BoundCompiler) if python else \
            for_kernels(_nrt=nrt, pipeline_class=_BoundCompiler)
        got = _BOUND[key] = jit(copy)
    return got


_BOUND = {}  # (function, values, nrt) -> its bound dispatcher


class _Separate:
    def __init__(self, fn, nrt, constants=(), values=(), returns=None):
        self.fn, self.nrt, self.constants, self.values, self.returns = fn, nrt, constants, values, returns
        self.dispatcher = bound(fn, dict(values), nrt, python=False) if values else for_kernels(fn, _nrt=nrt)
        self.module, self.name = fn.__module__, fn.__name__
        self.symbols = {}  # argument types -> (symbol, return type)
        self.addresses = {}  # argument types -> the compiled kernel's address
        self.variants = {}  # bound values -> the _Separate of fn with them bound

    def variant(self, values):
        """This kernel with ``values`` ((name, int) pairs, sorted) bound: its own compiled kernel."""
        if not values:
            return self
        got = self.variants.get(values)
        if got is None:
            got = self.variants[values] = _Separate(self.fn, self.nrt, (), values, self.returns)
        return got

    def address(self, argtypes):
        """Compile (or load) the kernel for ``argtypes``; the address of its code (for ``.at``)."""
        self.ensure(argtypes)
        return self.addresses[argtypes]

    def symbol(self, argtypes):
        digest = hashlib.sha256(repr((argtypes, self.values)).encode()).hexdigest()[:16]
        return f"fastbp.{KERNELS_STAMP[:12]}.{self.module.rsplit('.', 1)[-1]}.{self.name}.{digest}"

    def ensure(self, argtypes):
        """Compile (or load) the kernel for ``argtypes`` and define its symbol; (symbol, return type)."""
        got = self.symbols.get(argtypes)
        if got is None:
            self.dispatcher.compile(argtypes)
            cres = self.dispatcher.overloads[argtypes]
            name = self.symbol(argtypes)
            address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            ll.add_symbol(name, address)
            _DEFINED.add(name.encode())
            self.addresses[argtypes] = address
            if self.returns is not None and cres.signature.return_type != self.returns:
                raise TypeError(f"{self.name} returns {cres.signature.return_type}, declared {self.returns}")
            got = self.symbols[argtypes] = (name, cres.signature.return_type)
        return got

    def intrinsic(self):
        fn, top = self.fn, self
        params = list(inspect.signature(fn).parameters)

        def typer(args):
            values = tuple(sorted((p, a.literal_value) for p, a in zip(params, args)
                                  if p in top.constants and isinstance(a, types.IntegerLiteral)))
            separate = top.variant(values)
            argtypes = tuple(types.unliteral(a) for a in args)
            job = None
            if DEFER is not None and top.returns is not None and argtypes not in separate.symbols:
                job = _Load(top.module, top.name, argtypes, values)
                DEFER.add(job)  # (compiled later, before the caller's code is linked: see _defer)
                name, restype = separate.symbol(argtypes), top.returns
            else:
                name, restype = separate.ensure(argtypes)
            # the bound constants stay literal in the call's signature: Numba files an intrinsic's
            # lowering under its signature's types, so two variants of one signature would share one
            # (the one typed last, calling the other's kernel)
            sigtypes = tuple(a if p in top.constants and isinstance(a, types.IntegerLiteral) else u
                             for p, a, u in zip(params, args, argtypes))

            def codegen(context, builder, sig, llargs):
                fnty = context.call_conv.get_function_type(sig.return_type, sig.args)
                callee = cgutils.get_or_insert_function(builder.module, fnty, name)
                status, result = context.call_conv.call_function(builder, callee, sig.return_type, sig.args, llargs)
                with cgutils.if_unlikely(builder, status.is_error):
                    context.call_conv.return_status_propagate(builder, status)
                context.active_code_library._reload_init.add(_Load(top.module, top.name, argtypes, values))
                if job is not None:
                    _defer(context.active_code_library, job)
                return result
            return restype(*sigtypes), codegen

        # an intrinsic with fn's own parameters (Numba's lowering cannot pass *args to one); typed
        # with literal arguments first, so that a constant code reaches the typer as one
        names = ", ".join(params)
        scope = {"typer": typer}
        exec(f"def {fn.__name__}(typingctx, {names}):\n    return typer(({names},))", scope)
        call = _Call(fn.__name__, scope[fn.__name__], prefer_literal=True)
        call._register()
        call.dispatcher = self.dispatcher
        call.separate = self
        return call


    def at_intrinsic(self):
        """``kernel.at(fns, slot, *args)``: a call of the kernel's code at address ``fns[slot]``
        (``slot`` a literal int), which the caller's caller chose and compiled: a fused epoch is
        compiled once, not once per configuration, and calls the activation, output-delta and
        optimiser kernels of the plan's codes (``_nb_epoch.SLOTS``) by address. Typing it compiles
        nothing (the return type is declared); the call site's argument types are recorded in the
        caller's library (``_Slot``), so that the caller's Python side can compile the kernels
        for exactly them (``slot_addresses``)."""
        top = self
        params = list(inspect.signature(self.fn).parameters)

        def typer(fns, slot, args):
            index = slot.literal_value if isinstance(slot, types.IntegerLiteral) else None
            if index is None or not (isinstance(fns, types.Array) and fns.dtype == types.int64 and fns.ndim == 1):
                raise TypingError(f"{top.name}.at(fns, slot, ...): fns a 1-d int64 array, slot a literal int")
            argtypes = tuple(types.unliteral(a) for a in args)
            if DEFER is not None:  # (a helper process may compile the kernel meanwhile: compile_ahead)
                DEFER.add_slot(top.module, top.name, argtypes, index)

            def codegen(context, builder, sig, llargs):
                fnty = context.call_conv.get_function_type(top.returns, argtypes)
                aryty = sig.args[0]
                ary = context.make_array(aryty)(context, builder, llargs[0])
                where = cgutils.get_item_pointer(context, builder, aryty, ary, [context.get_constant(types.intp, index)])
                callee = builder.inttoptr(builder.load(where), fnty.as_pointer())
                status, result = context.call_conv.call_function(builder, callee, top.returns, argtypes, llargs[2:])
                with cgutils.if_unlikely(builder, status.is_error):
                    context.call_conv.return_status_propagate(builder, status)
                context.active_code_library._reload_init.add(_Slot(top.module, top.name, argtypes, index))
                return result
            return top.returns(fns, slot, *argtypes), codegen

        names = ", ".join(params)
        scope = {"typer": typer}
        exec(f"def {self.fn.__name__}_at(typingctx, fb_fns, fb_slot, {names}):\n"  # (fb_: no clash with fn's own)
             f"    return typer(fb_fns, fb_slot, ({names},))", scope)
        at = _Call(self.fn.__name__ + "_at", scope[self.fn.__name__ + "_at"], prefer_literal=True)
        at._register()
        return at


# While set (a ``compile_ahead.Ahead``: a helper process compiles too), each ``.at`` call typed is
# reported (``DEFER.add_slot(module, name, argument types, slot)``), and a call of a separately
# compiled kernel with a declared return type is typed without compiling the kernel:
# ``DEFER.add(job)`` (a ``_Load``), and the caller's library obtains it (``DEFER.obtain(job)``:
# compiled by the helper or here, loaded, its symbol defined) just before its code is linked (``_defer``).
DEFER = None


def _defer(library, job):
    """Have ``library`` (a kernel being compiled, which calls ``job``'s kernel by symbol) obtain
    that kernel before its code is linked: before its module is added to the JIT engine
    (``_finalize_final_module``; once there, any other kernel's linking, as a compile here does,
    resolves its symbols too)."""
    pending = library.__dict__.get("fastbp_pending")
    if pending is None:
        pending = library.fastbp_pending = []
        stock = library._finalize_final_module

        def finalize_final_module():
            for job in pending:
                DEFER.obtain(job) if DEFER is not None else job()
            stock()
        library._finalize_final_module = finalize_final_module
    if job not in pending:
        pending.append(job)


def slot_addresses(cres, values_of):
    """The ``fns`` array of a compiled kernel ``cres`` that calls kernels by address (``.at``):
    for each slot its call sites use, the address of the kernel compiled (or loaded) for the
    codes ``values_of(slot)`` (a dict name -> code; None: a slot never called, address 0) and the
    argument types of those call sites, its own and those of the separately compiled kernels it
    calls (``_nb_epoch.layers_above``), theirs in turn. A slot's call sites must agree on the
    argument types."""
    slots = {}
    for hook in slots_below(cres):
        if slots.setdefault(hook.index, hook).argtypes != hook.argtypes:
            raise TypeError(f"slot {hook.index} is called with two argument types: {hook.argtypes}, "
                            f"{slots[hook.index].argtypes}")
    fns = np.zeros(max(slots, default=-1) + 1, np.int64)
    for index, hook in slots.items():
        codes = values_of(index)
        if codes is not None:
            fns[index] = hook.separate().variant(tuple(sorted(codes.items()))).address(hook.argtypes)
    return fns


def slots_below(cres):
    """The calls by address (``_Slot``) in compiled kernel ``cres`` and in the separately compiled
    kernels it calls (``_Load``: compiled or loaded already, as its caller is), theirs in turn."""
    hooks, todo = set(), [cres]
    while todo:
        got = todo.pop()
        for hook in set(got.library._reload_init) | set(got.reload_init or ()):
            if hook not in hooks:
                hooks.add(hook)
                if isinstance(hook, _Load):
                    separate = hook.separate().variant(hook.values)
                    separate.ensure(hook.argtypes)
                    todo.append(separate.dispatcher.overloads[hook.argtypes])
    return [hook for hook in hooks if isinstance(hook, _Slot)]


class _Hook:
    """A reload hook of a compiled kernel (``_Load``, ``_Slot``): equal to another of its kind
    with the same ``_key()`` (Numba keeps a set of them per library, pickled with the code)."""

    def __eq__(self, other):
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def separate(self):
        """The ``_Separate`` of the kernel the hook names (``module.name``)."""
        return getattr(importlib.import_module(self.module), self.name).separate


class _Slot(_Hook):
    """A call by address (``.at``) in a compiled kernel: which kernel, with which argument types,
    through which slot of ``fns``. Kept with the caller's reload hooks (it does nothing when run),
    so that a caller loaded from the cache still says what it calls."""

    def __init__(self, module, name, argtypes, index):
        self.module, self.name, self.argtypes, self.index = module, name, argtypes, index

    def __call__(self):
        pass

    def _key(self):
        return self.module, self.name, self.argtypes, self.index


class _Call(_Intrinsic):
    """The intrinsic that calls a separately compiled kernel; from Python, the kernel itself."""

    def __call__(self, *args):
        return self.dispatcher(*args)


class _Load(_Hook):
    """Loads (or compiles) a separately compiled kernel for one signature and defines its symbol:
    run by Numba before it links a cached caller's code (``reload_init``; pickled with it)."""

    def __init__(self, module, name, argtypes, values=()):
        self.module, self.name, self.argtypes, self.values = module, name, argtypes, values

    def __call__(self):
        self.separate().variant(self.values).ensure(self.argtypes)

    def _key(self):
        return self.module, self.name, self.argtypes, self.values
