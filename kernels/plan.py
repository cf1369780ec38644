"""The training plan: everything a fused engine needs to train K >= 1 networks of one shape.

``build_plan`` is the one function that makes it, for every engine: the members' parameters
packed along a model axis (member k's weights are row k of ``W``), each layer's weights
TRANSPOSED (row j holds the n_in weights into unit j) with rows zero-padded to 128 bytes, so the
compiled loops run over contiguous, aligned memory without scalar tails; the biases likewise;
the optimiser's state in the same layout (``SW``/``Sb``: one row per state slot, e.g. SGD's
velocity), the optimiser's code and each member's hyperparameter vector (``hp``, K rows laid
out as ``ops.HYPERPARAMETERS``); frozen masks; the activation and loss codes. One network is K = 1.

The plan is a copy: training changes it, not the layers. ``unpack`` writes the parameters (and
the optimiser state) back into the members' layers and optimisers; ``snapshot``/``restore`` save and put back its state
(an epoch that is interrupted or diverges). NumPy only: the engines compile against it.
"""
from __future__ import annotations

import math

import numpy as np

from .ops import ACT_CODES, LOSS_CODES
from .sparse import SparseRows

ALIGN = 128  # bytes: rows of the packed buffers start on whole cache lines


def aligned_zeros(shape, dtype, align=ALIGN):
    """Zeros whose first element sits on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    n = math.prod(shape) if isinstance(shape, (tuple, list)) else int(shape)
    buf = np.zeros(n + align // dtype.itemsize, dtype)
    off = (-buf.ctypes.data % align) // dtype.itemsize
    return buf[off:off + n].reshape(shape)


class Plan:
    """See the module doc. Shared by the members: ``sizes`` (L+1 layer widths), ``lds`` (padded
    row strides), ``woff``/``boff`` (each layer's offset in a row of W / b), ``acts``,
    ``slopes``, ``loss``, ``mean`` (mean or summed gradients), ``opt`` (the optimiser's code),
    ``slots`` (its state arrays per parameter; 0: ``SW``/``Sb`` are 1 x 1 dummies). Per member
    (first axis K): ``W``, ``b``, ``SW``, ``Sb`` (K x slots x length), ``frozen_w``, ``frozen_b``,
    ``hp``, and ``optimizers`` (the objects whose state this is). ``input_major``: the first
    layer's weights are stored input-major instead (row i: the weights from input i, stride
    ``lds[1]``), for the sparse engines, which read the inputs' nonzeros from ``inputs``
    (``kernels/sparse.py``'s SparseRows); a dense engine's ``inputs`` is None (it reads the fit's
    data) or a dense copy of scipy.sparse data."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    @property
    def n_members(self):
        return self.W.shape[0]

    @property
    def n_layers(self):
        return len(self.acts)

    def view(self, flat, i):
        """Layer i's (n_in, n_out) weights inside one member's row of W (or of a state slot)."""
        n_in, n_out, o = self.sizes[i], self.sizes[i + 1], self.woff[i]
        if i == 0 and self.input_major:
            ld = self.lds[1]
            return flat[o:o + n_in * ld].reshape(n_in, ld)[:, :n_out]
        ld = self.lds[i]
        return flat[o:o + n_out * ld].reshape(n_out, ld)[:, :n_in].T

    def unpack(self, networks, members=None):
        """Copy members' parameters and optimiser state back into their layers and optimisers
        (``networks``: one list of layers per member; ``members``: the indices, default all)."""
        for k in range(self.n_members) if members is None else members:
            opt = self.optimizers[k]
            for i, layer in enumerate(networks[k]):
                lo, hi = self.boff[i], self.boff[i] + self.sizes[i + 1]
                layer.W[...] = self.view(self.W[k], i)
                layer.b[...] = self.b[k, lo:hi]
                for name in ("W", "b"):
                    state = None if name in layer.frozen else opt.state_of(layer, name)
                    if state is not None:
                        for j in range(state.shape[0]):
                            state[j] = self.view(self.SW[k, j], i) if name == "W" else self.Sb[k, j, lo:hi]

    def refresh(self):
        """The hyperparameters read again from the optimisers (a callback may have changed them)."""
        for k, opt in enumerate(self.optimizers):
            self.hp[k] = opt.hyperparameters()

    def snapshot(self):
        """A copy of the state training changes."""
        return self.W.copy(), self.b.copy(), self.SW.copy(), self.Sb.copy()

    def restore(self, snap, members=None):
        """Put back a ``snapshot`` (for ``members`` only, default all)."""
        k = slice(None) if members is None else list(members)
        for target, saved in zip((self.W, self.b, self.SW, self.Sb), snap):
            target[k] = saved[k]

    def finite(self):
        """Per member: whether its parameters and optimiser state are all finite."""
        ok = np.isfinite(self.W).all(axis=1) & np.isfinite(self.b).all(axis=1)
        if self.slots:
            ok &= np.isfinite(self.SW).all(axis=(1, 2)) & np.isfinite(self.Sb).all(axis=(1, 2))
        return ok

    def scratch(self, key, make):
        """``make()``'s buffers for ``key``, made on first use and kept: an engine's work space,
        reused by every epoch as it is by every batch of one (allocating it per epoch was a tenth of
        a short epoch). A copy of the plan makes its own."""
        kept = self.__dict__.setdefault("_scratch", {})
        if key not in kept:
            kept[key] = make()
        return kept[key]

    def copy(self):
        fields = dict(self.__dict__)
        fields.pop("_scratch", None)  # (a copy may train at the same time: a warmup left compiling)
        for name in ("W", "b", "SW", "Sb"):
            fields[name] = _aligned_copy(fields[name])
        return Plan(**fields)


def _aligned_copy(a):
    out = aligned_zeros(a.shape, a.dtype)
    out[...] = a
    return out


def member_fields(networks, optimizers):
    """What every plan holds beside the parameters, the same for both kinds: the activation codes
    and slopes, the frozen masks (K x L), the optimiser's code, each member's hyperparameter vector
    (K rows) and the optimisers themselves."""
    first = networks[0]
    return dict(
        acts=np.array([ACT_CODES[layer.activation.name] for layer in first], dtype=np.int64),
        slopes=np.array([layer.activation.slope for layer in first], dtype=np.float64),
        frozen_w=np.array([["W" in layer.frozen for layer in net] for net in networks], dtype=np.bool_),
        frozen_b=np.array([["b" in layer.frozen for layer in net] for net in networks], dtype=np.bool_),
        opt=optimizers[0].code, hp=np.array([opt.hyperparameters() for opt in optimizers], dtype=np.float64),
        optimizers=list(optimizers))


def build_plan(networks, loss, optimizers, dtype, flush=0.0, inputs=None):
    """The plan of K networks of one shape (``networks``: one list of Dense layers per member,
    their parameters NumPy arrays), trained with ``loss`` and one optimiser per member (all of
    one kind and reduction). ``flush``: the engine's threshold below which deltas are flushed
    to zero. ``inputs``: what the engine reads instead of the fit's data: the training set's
    ``SparseRows`` for the sparse engines (the first layer is then input-major), a dense copy of
    scipy.sparse data for the dense ones, or None (the fit's data)."""
    dt = np.dtype(dtype)
    first = networks[0]
    kinds = {(opt.kind, opt.reduction) for opt in optimizers}
    if len(kinds) != 1:
        raise ValueError(f"optimizers: one plan takes optimisers of one kind and reduction, got {sorted(kinds)}")
    L = len(first)
    sizes = np.array([first[0].n_in] + [layer.n_out for layer in first], dtype=np.int64)
    pad = ALIGN // dt.itemsize  # rows padded to 128 bytes
    lds = (sizes + pad - 1) // pad * pad
    input_major = isinstance(inputs, SparseRows)
    span = sizes[1:] * lds[:-1]  # each layer's share of a row of W
    if input_major:
        span[0] = sizes[0] * lds[1]
    woff = np.zeros(L, dtype=np.int64)
    boff = np.zeros(L, dtype=np.int64)
    for i in range(1, L):
        woff[i] = woff[i - 1] + span[i - 1]
        boff[i] = boff[i - 1] + lds[i]  # each layer's biases padded like its rows (zeros after)
    K = len(networks)
    wsize = int(np.sum(span))
    bsize = int(np.sum(lds[1:]))
    slots = max(len(opt.slots) for opt in optimizers)
    W = aligned_zeros((K, wsize), dt)
    b = aligned_zeros((K, bsize), dt)
    SW = aligned_zeros((K, max(slots, 1), wsize if slots else 1), dt)
    Sb = aligned_zeros((K, max(slots, 1), bsize if slots else 1), dt)
    plan = Plan(
        sizes=sizes, lds=lds, woff=woff, boff=boff, W=W, b=b, SW=SW, Sb=Sb, slots=slots,
        input_major=input_major, inputs=inputs,
        loss=LOSS_CODES[loss], mean=optimizers[0].reduction == "mean", tiny=float(flush),
        **member_fields(networks, optimizers),
    )
    _fill(plan, networks, optimizers)
    return plan


def refill(plan, networks, loss, optimizers):
    """``plan`` with the layers' parameters and optimiser state copied in again (a callback may
    have changed them), when the layers still have its shapes, codes and frozen masks and the
    optimisers are its own; else None (build a new one). Allocates nothing: what a fit with a
    callback does after every epoch."""
    fields = member_fields(networks, optimizers)
    first = networks[0]
    sizes = [first[0].n_in] + [layer.n_out for layer in first]
    if (len(networks) != plan.n_members or len(first) != plan.n_layers or sizes != plan.sizes.tolist()
            or LOSS_CODES.get(loss) != plan.loss or fields["opt"] != plan.opt
            or any(a is not b for a, b in zip(optimizers, plan.optimizers))
            or max(len(opt.slots) for opt in optimizers) != plan.slots
            or any(not np.array_equal(fields[f], getattr(plan, f)) for f in ("acts", "slopes", "frozen_w", "frozen_b"))
            or any(layer.W.shape != (n_in, n_out) or layer.b.shape != (n_out,)
                   for net in networks for layer, n_in, n_out in zip(net, sizes, sizes[1:]))):
        return None
    plan.hp[...] = fields["hp"]
    _fill(plan, networks, optimizers)
    return plan


def _fill(plan, networks, optimizers):
    """Copy the members' parameters and optimiser state into the plan (state not made yet: zeros)."""
    sizes, boff = plan.sizes, plan.boff
    for k, (net, opt) in enumerate(zip(networks, optimizers)):
        for i, layer in enumerate(net):
            lo, hi = boff[i], boff[i] + sizes[i + 1]
            plan.view(plan.W[k], i)[...] = layer.W
            plan.b[k, lo:hi] = layer.b
            for name in ("W", "b"):
                state = opt.state_of(layer, name, create=False)
                if name in layer.frozen:
                    state = None
                for j in range(plan.slots):
                    if name == "W":
                        plan.view(plan.SW[k, j], i)[...] = 0 if state is None else state[j]
                    else:
                        plan.Sb[k, j, lo:hi] = 0 if state is None else state[j]


class LayerPlan:
    """A plan whose parameters stay in the members' layers, in the layers' own layout: the GPU's
    engines (which keep a network's weights in shared memory or hand them to cuBLAS as they
    are). What it holds beside them is the same as a ``Plan``'s, made once per fit: the
    optimisers (and their state), each member's hyperparameter vector ``hp``, the loss, the
    frozen masks, the activation codes, and what the engine chose (``fields``). Training
    changes the layers in place, so ``unpack`` has nothing to do; ``snapshot``/``restore``/
    ``finite`` work on the layers' arrays through their backend."""

    def __init__(self, networks, loss, optimizers, **fields):
        self.networks = [list(layers) for layers in networks]
        self.loss = loss
        first = self.networks[0]
        self.sizes = np.array([first[0].n_in] + [layer.n_out for layer in first], dtype=np.int64)
        self.__dict__.update(member_fields(self.networks, optimizers), **fields)

    @property
    def n_members(self):
        return len(self.networks)

    @property
    def n_layers(self):
        return len(self.acts)

    refresh = Plan.refresh  # the same fields, the same code

    def unpack(self, networks=None, members=None):
        """Nothing to copy: the layers are the plan's parameters."""

    def snapshot(self):
        return [([{k: p.copy() for k, p in layer.params().items()} for layer in net], opt.snapshot(net))
                for net, opt in zip(self.networks, self.optimizers)]

    def restore(self, snap, members=None):
        for k in range(self.n_members) if members is None else members:
            params, state = snap[k]
            for layer, values in zip(self.networks[k], params):
                for name, p in layer.params().items():
                    p[...] = values[name]
            self.optimizers[k].restore(self.networks[k], state)

    checks_finite = False  # True: the engine's loss per member is NaN when they are not (nothing to check)

    def finite(self):
        """Per member: whether its parameters and optimiser state are all finite (all True where
        the engine folds that into its losses: ``checks_finite``)."""
        if self.checks_finite:
            return np.ones(self.n_members, dtype=bool)

        def ok(a, be):
            return bool(np.isfinite(be.to_numpy(a)).all())

        return np.array([all(ok(a, layer.backend) for layer in net
                             for a in (*layer.params().values(), *opt.layer_state(layer).values()))
                         for net, opt in zip(self.networks, self.optimizers)])
