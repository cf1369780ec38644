"""The training plan: everything a fused engine needs to train K >= 1 networks of one shape.

``build_plan`` is the one function that makes it, for every engine: the members' parameters
packed along a model axis (member k's weights are row k of ``W``), each layer's weights
TRANSPOSED (row j holds the n_in weights into unit j) with rows zero-padded to 128 bytes, so the
compiled loops run over contiguous, aligned memory without scalar tails; the biases likewise;
the momentum velocities in the same layout (the optimiser's state); per-member hyperparameters
(arrays of length K); frozen masks; the activation and loss codes. One network is K = 1.

The plan is a copy: training changes it, not the layers. ``unpack`` writes the parameters (and
velocities) back into the members' layers; ``snapshot``/``restore`` save and put back its state
(an epoch that is interrupted or diverges). NumPy only: the engines compile against it.
"""
from __future__ import annotations

import numpy as np

from .ops import ACT_CODES, LOSS_CODES

ALIGN = 128  # bytes: rows of the packed buffers start on whole cache lines


def aligned_zeros(shape, dtype, align=ALIGN):
    """Zeros whose first element sits on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    buf = np.zeros(n + align // dtype.itemsize, dtype)
    off = (-buf.ctypes.data % align) // dtype.itemsize
    return buf[off:off + n].reshape(shape)


class Plan:
    """See the module doc. Shared by the members: ``sizes`` (L+1 layer widths), ``lds`` (padded
    row strides), ``woff``/``boff`` (each layer's offset in a row of W / b), ``acts``,
    ``slopes``, ``loss``, ``mean`` (mean or summed gradients), ``momentum`` (whether any member
    keeps velocities). Per member (first axis K): ``W``, ``b``, ``VW``, ``vb``, ``frozen_w``,
    ``frozen_b``, ``lr``, ``mu``, ``wd``."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    @property
    def n_members(self):
        return self.W.shape[0]

    @property
    def n_layers(self):
        return len(self.acts)

    def view(self, flat, i):
        """Layer i's (n_in, n_out) weights inside one member's row of W (or VW)."""
        n_in, n_out, ld, o = self.sizes[i], self.sizes[i + 1], self.lds[i], self.woff[i]
        return flat[o:o + n_out * ld].reshape(n_out, ld)[:, :n_in].T

    def unpack(self, networks, members=None):
        """Copy members' parameters and velocities back into their layers (``networks``: one
        list of layers per member; ``members``: the indices to copy, default all)."""
        for k in range(self.n_members) if members is None else members:
            for i, layer in enumerate(networks[k]):
                lo, hi = self.boff[i], self.boff[i] + self.sizes[i + 1]
                layer.W[...] = self.view(self.W[k], i)
                layer.b[...] = self.b[k, lo:hi]
                if self.mu[k] > 0:
                    for name in ("W", "b"):
                        if name not in layer.frozen:
                            layer.momentum_buffer(name)
                    if "W" in layer.velocity:
                        layer.velocity["W"][...] = self.view(self.VW[k], i)
                    if "b" in layer.velocity:
                        layer.velocity["b"][...] = self.vb[k, lo:hi]

    def snapshot(self):
        """A copy of the state training changes."""
        return self.W.copy(), self.b.copy(), self.VW.copy(), self.vb.copy()

    def restore(self, snap, members=None):
        """Put back a ``snapshot`` (for ``members`` only, default all)."""
        k = slice(None) if members is None else list(members)
        for target, saved in zip((self.W, self.b, self.VW, self.vb), snap):
            target[k] = saved[k]

    def finite(self):
        """Per member: whether its parameters and velocities are all finite."""
        ok = np.isfinite(self.W).all(axis=1) & np.isfinite(self.b).all(axis=1)
        if self.momentum:
            ok &= np.isfinite(self.VW).all(axis=1) & np.isfinite(self.vb).all(axis=1)
        return ok

    def copy(self):
        fields = dict(self.__dict__)
        for name in ("W", "b", "VW", "vb"):
            fields[name] = _aligned_copy(fields[name])
        return Plan(**fields)


def _aligned_copy(a):
    out = aligned_zeros(a.shape, a.dtype)
    out[...] = a
    return out


def build_plan(networks, loss, optimizers, dtype, flush=0.0):
    """The plan of K networks of one shape (``networks``: one list of Dense layers per member,
    their parameters NumPy arrays), trained with ``loss`` and one SGD per member. ``flush``: the
    engine's threshold below which deltas are flushed to zero."""
    dt = np.dtype(dtype)
    first = networks[0]
    L = len(first)
    sizes = np.array([first[0].n_in] + [layer.n_out for layer in first], dtype=np.int64)
    pad = ALIGN // dt.itemsize  # rows padded to 128 bytes
    lds = (sizes + pad - 1) // pad * pad
    woff = np.zeros(L, dtype=np.int64)
    boff = np.zeros(L, dtype=np.int64)
    for i in range(1, L):
        woff[i] = woff[i - 1] + sizes[i] * lds[i - 1]
        boff[i] = boff[i - 1] + sizes[i]
    K = len(networks)
    wsize = int(np.sum(sizes[1:] * lds[:-1]))
    bsize = int(-(-int(np.sum(sizes[1:])) // pad) * pad)
    mu = np.array([opt.momentum for opt in optimizers], dtype=np.float64)
    momentum = bool((mu > 0).any())
    W = aligned_zeros((K, wsize), dt)
    b = aligned_zeros((K, bsize), dt)
    VW = aligned_zeros((K, wsize if momentum else 1), dt)
    vb = aligned_zeros((K, bsize), dt)
    plan = Plan(
        sizes=sizes, lds=lds, woff=woff, boff=boff, W=W, b=b, VW=VW, vb=vb, momentum=momentum,
        acts=np.array([ACT_CODES[layer.activation.name] for layer in first], dtype=np.int64),
        slopes=np.array([layer.activation.slope for layer in first], dtype=np.float64),
        frozen_w=np.array([["W" in layer.frozen for layer in net] for net in networks], dtype=np.bool_),
        frozen_b=np.array([["b" in layer.frozen for layer in net] for net in networks], dtype=np.bool_),
        loss=LOSS_CODES[loss], mean=optimizers[0].reduction == "mean", tiny=float(flush),
        lr=np.array([opt.lr for opt in optimizers], dtype=np.float64), mu=mu,
        wd=np.array([opt.weight_decay for opt in optimizers], dtype=np.float64),
    )
    for k, net in enumerate(networks):
        for i, layer in enumerate(net):
            lo, hi = boff[i], boff[i] + sizes[i + 1]
            plan.view(W[k], i)[...] = layer.W
            b[k, lo:hi] = layer.b
            if mu[k] > 0:
                if layer.velocity.get("W") is not None:
                    plan.view(VW[k], i)[...] = layer.velocity["W"]
                if layer.velocity.get("b") is not None:
                    vb[k, lo:hi] = layer.velocity["b"]
    return plan
