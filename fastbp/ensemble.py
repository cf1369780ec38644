"""Many networks of one shape trained at once: a sweep, seeds for an error bar, an ensemble.

Member i trained in the ensemble equals the lone ``Network`` with the same seed trained with the
same arguments (same shuffles, same updates): the ensemble is a faster way to run them, not a
different model. On the numba backend the members share one training plan (their parameters
packed along a model axis) and ``threads`` workers each train whole members; on the cupy
backend the fused kernel trains every member in one launch per epoch, a thread block (an SM)
each; elsewhere the members train one after another.
"""
from __future__ import annotations

import json
import numbers
import os

import numpy as np

from . import training
from ._io import atomic_write
from .network import Network, labels_from
from .optim import SGD, Optimizer
from .schedules import Constant, as_schedule


class Ensemble:
    """K networks of one shape, dtype and backend, trained together. Members made on different
    backend objects of the same kind and dtype are moved onto the first member's.

    >>> ens = Ensemble.from_sizes([784, 30, 10], n_models=16, seeds=range(16))
    >>> h = ens.fit(X, y, epochs=30, lr=[0.5, 1.0, 3.0, ...])   # a number or one per member
    >>> h["val_accuracy"][-1]                                   # one value per member
    """

    def __init__(self, members):
        members = list(members)
        if not members or not all(isinstance(m, Network) for m in members):
            raise TypeError(f"members: expected a non-empty list of fastbp Networks, got {members!r:.100}")
        first = members[0]
        for i, m in enumerate(members[1:], 1):
            for what, a, b in (("sizes", m.sizes, first.sizes),
                               ("activations", [str(l.activation) for l in m.layers],
                                [str(l.activation) for l in first.layers]),
                               ("loss", m.loss, first.loss), ("dtype", m.dtype.name, first.dtype.name),
                               ("backend", m.backend.name, first.backend.name)):
                if a != b:
                    raise ValueError(f"members: member {i} has {what} {a}, member 0 {b}; an ensemble's "
                                     f"members must share shape, activations, loss, dtype and backend")
            if m.backend is not first.backend:
                m.backend = first.backend  # same kind and dtype: one backend object runs them all
                for layer in m.layers:
                    layer.backend = first.backend
        if len({id(m) for m in members}) != len(members):
            raise ValueError("members: the same Network appears twice")
        self.members = members

    @classmethod
    def from_sizes(cls, sizes, n_models, seeds=None, **kwargs):
        """``n_models`` networks ``Network.from_sizes(sizes, seed=seeds[i], **kwargs)`` (seeds
        default to 0..n_models-1) sharing one backend object."""
        from ._validation import check_positive_int

        n_models = check_positive_int(n_models, "n_models")
        seeds = list(range(n_models)) if seeds is None else list(seeds)
        if len(seeds) != n_models:
            raise ValueError(f"seeds: expected {n_models} seeds (one per model), got {len(seeds)}")
        first = Network.from_sizes(sizes, seed=seeds[0], **kwargs)
        kwargs = {**kwargs, "backend": first.backend}
        kwargs.pop("dtype", None)
        return cls([first] + [Network.from_sizes(sizes, seed=s, **kwargs) for s in seeds[1:]])

    # --- description ----------------------------------------------------------------------
    def __len__(self):
        return len(self.members)

    def __getitem__(self, i):
        return self.members[i]

    def __iter__(self):
        return iter(self.members)

    def __repr__(self):
        m = self.members[0]
        return (f"Ensemble({len(self)} x {'-'.join(map(str, m.sizes))}, loss={m.loss!r}, "
                f"backend={m.backend.name!r}, dtype={m.dtype.name!r})")

    @property
    def backend(self):
        return self.members[0].backend

    # --- training -------------------------------------------------------------------------
    def _per_member(self, value, name):
        """A number, or a sequence with one value per member, as a list of K values."""
        if isinstance(value, (numbers.Number, np.generic)) or np.ndim(value) == 0:
            return [value] * len(self)
        values = list(value)
        if len(values) != len(self):
            raise ValueError(f"{name}: expected a number or {len(self)} values (one per member), got {len(values)}")
        return values

    def fit(self, X, y, epochs=1, batch_size=10, lr=0.1, momentum=0.0, weight_decay=0.0, shuffle=True,
            validation_data=None, progress=False, callback=None, optimizer=None):
        """Train every member as ``Network.fit`` would, continuing from its current weights.
        ``lr`` (a number, a schedule or a callable, see ``Network.fit``), ``momentum`` and
        ``weight_decay``: one for all, or one value per member (a stateful schedule is copied for
        each member). ``optimizer``: an optimiser (each member trains with a fresh copy of it, as
        a lone network given a new one would), or one per member; then ``lr`` may still be a
        schedule. Returns a History whose entries hold one value per member and epoch (``loss``,
        ``val_loss``, ``val_accuracy``, ``lr``); ``diverged`` maps the members that diverged to
        the epoch (from 1): each is put back to its weights before that epoch and stops, the
        others train on."""
        rates = self._per_member(lr, "lr")
        schedules, optimizers = [], []
        for k, rate in enumerate(rates):
            try:
                fixed = isinstance(rate, numbers.Real) and optimizer is not None
                schedules.append(None if fixed else as_schedule(rate, "lr", copy_state=True))
            except (TypeError, ValueError) as e:
                raise type(e)(f"{e} (member {k})") from None
        if optimizer is None:
            for k, (s, mu, wd) in enumerate(zip(schedules, self._per_member(momentum, "momentum"),
                                                self._per_member(weight_decay, "weight_decay"))):
                try:
                    optimizers.append(SGD(s.rate(0, 0), mu, wd).continue_from(self.members[k].optimizer))
                except (TypeError, ValueError) as e:
                    raise type(e)(f"{e} (member {k})") from None
        elif isinstance(optimizer, Optimizer):
            optimizers = [optimizer.fresh() for _ in self.members]
        else:
            optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else None
            if optimizers is None or len(optimizers) != len(self) or not all(
                    isinstance(o, Optimizer) for o in optimizers):
                raise TypeError(f"optimizer: expected a fastbp optimiser or a list of {len(self)} (one per "
                                f"member), got {optimizer!r}")
            if len({id(o) for o in optimizers}) != len(optimizers):
                raise ValueError("optimizer: each member needs an optimiser of its own (it owns that member's state)")
        if all(s is None or isinstance(s, Constant) for s in schedules):
            schedules = None
        else:
            schedules = [s if s is not None else Constant(o.lr) for s, o in zip(schedules, optimizers)]
        return training.fit(self.members, optimizers, X, y, epochs, batch_size, shuffle, validation_data,
                            progress, callback, single=False, schedules=schedules)  # divergence: in history

    # --- inference ------------------------------------------------------------------------
    def predict_proba(self, X):
        """The members' mean output (n_samples, n_outputs)."""
        return np.mean([m.predict_proba(X) for m in self.members], axis=0)

    def predict(self, X):
        """Class labels from the mean output (with one output, 1 where it is >= 0.5)."""
        return labels_from(self.predict_proba(X))

    def evaluate(self, X, y):
        """One ``{"accuracy", "loss"}`` per member."""
        return [m.evaluate(X, y) for m in self.members]

    # --- persistence ----------------------------------------------------------------------
    def save(self, path):
        """All members in one ``.npz`` file (written to a temporary name, then renamed)."""
        path = os.fspath(path)
        arrays = {"config": np.array(json.dumps({"format": "fastbp-ensemble", "version": 1,
                                                 "members": [m._config() for m in self.members]}))}
        for k, m in enumerate(self.members):
            for i, p in enumerate(m.get_params()):
                arrays[f"m{k}_W{i}"], arrays[f"m{k}_b{i}"] = p["W"], p["b"]
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path, backend="auto", dtype=None):
        """An ensemble saved by ``save``; a damaged file is a ValueError naming the path."""
        path = os.fspath(path)
        config, arrays = Network._read_npz(path, "fastbp-ensemble")
        try:
            specs = config["members"]
            if not isinstance(specs, list) or not specs:
                raise ValueError("no members")
            parsed = []
            for k, spec in enumerate(specs):
                prefix = f"m{k}_"
                own = {key[len(prefix):]: a for key, a in arrays.items() if key.startswith(prefix)}
                parsed.append(Network._layers_from(spec, own))
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing entry {e}" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"{path}: not a valid fastbp ensemble file ({what})") from None
        be = Network._backend_for(backend, dtype, parsed[0][2])
        try:
            return cls([Network(layers, loss=loss, backend=be) for layers, loss, _ in parsed])
        except ValueError as e:  # members that do not fit together
            raise ValueError(f"{path}: not a valid fastbp ensemble file ({e})") from None
