"""The network: a stack of dense layers, a loss, a backend, and SGD training."""
from __future__ import annotations

import json
import numbers
import os
import zipfile
import zlib
from contextlib import contextmanager

import numpy as np

from . import kernels, training
from ._io import atomic_write
from ._validation import check_finite_array, check_inputs, check_sample_weight, check_seed, check_targets
from .layers import Dense
from .losses import check_loss
from .optim import SGD, Optimizer
from .schedules import Constant, as_schedule


def labels_from(a):
    """Class labels of outputs ``a`` (n, n_outputs): the largest output's index; with one output,
    1 where it is >= 0.5."""
    if a.shape[1] == 1:
        return (a[:, 0] >= 0.5).astype(np.int64)
    return a.argmax(axis=1)


class DivergenceError(FloatingPointError):
    """Training produced NaN or infinite values. The network has been put back to the weights
    (and momentum) it had before the epoch that diverged; ``history`` holds the epochs run."""

    def __init__(self, message, history=None):
        super().__init__(message)
        self.history = history


class History(dict):
    """Per-epoch lists ``loss``, ``val_loss``, ``val_accuracy`` and ``seconds`` (training time of
    each epoch, evaluation excluded), readable as keys or attributes; ``compile_seconds`` holds
    the time the backend spent compiling before the first epoch, ``engine`` the name of the
    engine that trained (e.g. "numba-fused-1t", "numba-sparse-1t", "numpy-per-batch"), ``input``
    what it read of the inputs (``layout``: "dense", "sparse" or "scipy.sparse", ``nbytes``; for
    the sparse engines also ``density`` and ``dense_nbytes``). An ensemble's history has one value
    per member in each entry, and ``diverged`` (member -> epoch)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def to_json(self, path=None):
        """The history as JSON text (NaN and infinities as null, standard JSON; an ensemble's
        ``diverged`` keys as strings); written to ``path`` too when given (atomically)."""
        def clean(value):
            if isinstance(value, dict):
                return {str(k): clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            if isinstance(value, (float, np.floating)):
                return float(value) if np.isfinite(value) else None
            if isinstance(value, np.integer):
                return int(value)
            return value

        text = json.dumps(clean(dict(self)), indent=1)
        if path is not None:
            with atomic_write(path, "w") as f:
                f.write(text)
        return text

    def plot(self, path, title=None):
        """Training curves as a PNG (the ``plot`` extra): loss and validation accuracy per epoch,
        one line per member for an ensemble."""
        from .plots import training_curves

        training_curves(self, path, title)


_ZIP_MAGIC = b"PK\x03\x04"  # what every .npz (a zip archive) starts with


class Network:
    """A multilayer perceptron trained by backpropagation and SGD.

    >>> net = Network([Dense(784, 30, "sigmoid"), Dense(30, 10, "sigmoid")], loss="quadratic")
    >>> history = net.fit(X, y, epochs=30, batch_size=10, lr=3.0)
    """

    def __init__(self, layers, loss="quadratic", backend="auto", dtype=None, seed=None):
        """``backend``: "auto" (default: cupy with a GPU, else numba, else numpy), a name, or a
        backend object; ``dtype``: "float32" (default) or "float64"; ``seed``: initial weights and
        the shuffling of every epoch are drawn from it (same seed, same weights)."""
        layers = list(layers)
        if not layers or not all(isinstance(layer, Dense) for layer in layers):
            raise TypeError(f"layers: expected a non-empty list of Dense layers, got {layers!r}")
        for i, (a, b) in enumerate(zip(layers, layers[1:])):
            if a.n_out != b.n_in:
                raise ValueError(f"layers: layer {i} has {a.n_out} outputs but layer {i + 1} expects "
                                 f"{b.n_in} inputs")
        for i, layer in enumerate(layers[:-1]):
            if layer.activation.name == "softmax":
                raise ValueError(f"layers: softmax is for the output layer only, found at layer {i}")
        self.layers = layers
        self.loss = check_loss(loss)
        out = layers[-1].activation.name
        if not kernels.pairs_with(out, self.loss):
            needs = " or ".join(kernels.LOSS_OUTPUTS[self.loss])
            hint = "; for sigmoid outputs use 'binary_cross_entropy'" if out == "sigmoid" else ""
            raise ValueError(f"loss: {self.loss!r} needs a {needs} output layer, got {out!r}{hint}")
        if isinstance(backend, kernels.Backend) and dtype is not None and backend.dtype != dtype:
            raise ValueError(f"dtype: {dtype!r} differs from the given backend's dtype {backend.dtype.name!r}")
        self.backend = kernels.get_backend(backend, dtype or "float32")
        self.dtype = self.backend.dtype
        self.seed = check_seed(seed)
        self.rng = np.random.default_rng(self.seed)
        for layer in layers:
            layer.build(self.backend, self.rng)
        self.optimizer = None  # the optimiser of the last fit, which owns its state (momentum velocities)

    @classmethod
    def from_sizes(cls, sizes, activation="sigmoid", output_activation=None, loss="quadratic",
                   init="scaled_normal", **kwargs):
        """A network from layer sizes, e.g. ``[784, 30, 10]``; the output layer uses
        ``output_activation`` (default: ``activation``)."""
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes: expected at least two sizes (inputs and outputs), got {sizes}")
        acts = [activation] * (len(sizes) - 2) + [output_activation or activation]
        layers = [Dense(n_in, n_out, act, init=init) for n_in, n_out, act in zip(sizes, sizes[1:], acts)]
        return cls(layers, loss=loss, **kwargs)

    # --- description ----------------------------------------------------------------------
    @property
    def sizes(self):
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]

    def __repr__(self):
        layers = ", ".join(map(repr, self.layers))
        return f"Network([{layers}], loss={self.loss!r}, backend={self.backend.name!r}, dtype={self.dtype.name!r})"

    def get_params(self):
        """The parameters as NumPy arrays: a list of ``{"W": (n_in, n_out), "b": (n_out,)}``."""
        be = self.backend
        return [{k: np.array(be.to_numpy(v)) for k, v in layer.params().items()} for layer in self.layers]

    def set_params(self, params):
        """Replace the parameters (a list like ``get_params()`` returns)."""
        if len(params) != len(self.layers):
            raise ValueError(f"params: expected {len(self.layers)} layers, got {len(params)}")
        checked = []  # every layer checked before any is changed
        for i, (layer, p) in enumerate(zip(self.layers, params)):
            if not (hasattr(p, "keys") and "W" in p and "b" in p):
                raise ValueError(f"params[{i}]: expected a dict with 'W' and 'b', got {p!r:.80}")
            checked.append((check_finite_array(p["W"], f"params[{i}]['W']", (layer.n_in, layer.n_out)),
                            check_finite_array(p["b"], f"params[{i}]['b']", (layer.n_out,))))
        for layer, (W, b) in zip(self.layers, checked):
            layer.set_params(self.backend, W, b)

    # --- inference ------------------------------------------------------------------------
    def _forward(self, x):
        """All layers' ``(z, a)`` for a batch already on the backend."""
        cache = []
        for layer in self.layers:
            z, x = layer.forward(x)
            cache.append((z, x))
        return cache

    def _batches(self, X, batch_size=4096):
        """Output activations for ``X``, in chunks; yields ``(start, a)`` on the backend."""
        X, scale = check_inputs(X, self.layers[0].n_in)
        data = self.backend.prepare_data(X)
        for start in range(0, X.shape[0], batch_size):
            idx = np.arange(start, min(start + batch_size, X.shape[0]))
            x = self.backend.gather(data, idx, scale)
            yield start, self._forward(x)[-1][1]

    def predict_proba(self, X):
        """The output layer's activations, as a NumPy array (n_samples, n_outputs)."""
        be = self.backend
        return np.concatenate([np.asarray(be.to_numpy(a)) for _, a in self._batches(X)])

    def predict(self, X):
        """Class labels: the index of the largest output (with one output, 1 where it is >= 0.5)."""
        return labels_from(self.predict_proba(X))

    def evaluate(self, X, y):
        """``{"accuracy": ..., "loss": ...}`` on (X, y); the loss is the mean per-sample loss."""
        X, _ = check_inputs(X, self.layers[0].n_in)
        Y = check_targets(y, X.shape[0], self.layers[-1].n_out)
        total = 0.0
        correct = 0
        be = self.backend
        for start, a in self._batches(X):
            Yb = Y[start:start + a.shape[0]]
            total += be.loss(a, be.asarray(Yb), self.loss)
            a = np.asarray(be.to_numpy(a))
            if a.shape[1] == 1:
                correct += int(np.sum((a[:, 0] >= 0.5) == (Yb[:, 0] >= 0.5)))
            else:
                correct += int(np.sum(a.argmax(axis=1) == Yb.argmax(axis=1)))
        return {"accuracy": correct / X.shape[0], "loss": total / X.shape[0]}

    # --- training -------------------------------------------------------------------------
    def fit(self, X, y, epochs=1, batch_size=10, lr=0.1, momentum=0.0, weight_decay=0.0,
            optimizer=None, shuffle=True, validation_data=None, progress=False, callback=None, sample_weight=None):
        """Train by mini-batch SGD, continuing from the current weights; returns a History.

        batch_size=1 is per-sample SGD, ``None`` full-batch gradient descent. Each epoch visits the
        samples in an order drawn from the network's seed (``shuffle=False``: in order).
        ``lr``: a number, a schedule (``fb.InverseScaling(0.1)``, ``fb.Adaptive(0.1)``, see
        ``fastbp.schedules``) or any ``callable(epoch) -> lr``; ``history["lr"]`` records each
        epoch's rate. ``optimizer`` (``fb.SGD(...)``, ``fb.Adam(...)``) replaces
        lr/momentum/weight_decay (a schedule given as ``lr`` still drives its rate) and trains
        with its own state; without one, fit makes an SGD that goes on from the state of the
        previous fit's (momentum continues across calls). The network keeps it as
        ``net.optimizer``. ``callback(epoch, history)`` is called after each epoch; returning
        True stops training. ``sample_weight``: one weight >= 0 per sample, scaling its share of
        the loss and of its batch's gradient (the batch's mean is over its total weight); such a
        fit runs the per-batch loop.
        """
        schedule = None if isinstance(lr, numbers.Real) and optimizer is not None else as_schedule(lr)
        if optimizer is None:
            opt = SGD(schedule.rate(0, 0), momentum, weight_decay).continue_from(self.optimizer)
        elif isinstance(optimizer, Optimizer):
            opt = optimizer
        else:
            raise TypeError(f"optimizer: expected a fastbp optimiser such as fastbp.SGD or fastbp.Adam, got "
                            f"{type(optimizer).__name__}")
        if isinstance(schedule, Constant):
            schedule = None  # nothing to set per epoch

        def diverged(run, bad, epoch, history):
            where = f"after epoch {epoch}" if epoch else "at the start of this fit"
            raise DivergenceError(
                f"training diverged in epoch {epoch + 1}: the loss or the weights became NaN or "
                f"infinite (learning rate {opt.lr} may be too large, or the inputs unscaled); the "
                f"network was put back to its weights {where}, the last finite ones", history)

        return training.fit([self], [opt], X, y, epochs, batch_size, shuffle, validation_data, progress, callback,
                            single=True, on_diverged=diverged, schedules=None if schedule is None else [schedule],
                            sample_weight=sample_weight)

    def _params_finite(self):
        be = self.backend
        return all(np.isfinite(be.to_numpy(p)).all() for layer in self.layers for p in layer.params().values())

    # --- the state an epoch changes, and undoing it ----------------------------------------
    def _state(self, opt):
        """Copies of every layer's parameters and of ``opt``'s state for them (on the backend)."""
        return [{k: p.copy() for k, p in layer.params().items()} for layer in self.layers], opt.snapshot(self.layers)

    def _set_state(self, state, opt):
        """Put back a ``_state(opt)``, in place (optimiser state made since is dropped)."""
        params, saved = state
        for layer, values in zip(self.layers, params):
            for k, p in layer.params().items():
                p[...] = values[k]
        opt.restore(self.layers, saved)

    @contextmanager
    def _undone_on_error(self, opt):
        """Around an epoch: on any exception (Ctrl-C included) the network and ``opt`` are put
        back as they were before the epoch, so an interrupted epoch never leaves a mixture of old
        and new weights. Yields the saved state."""
        start = self._state(opt)
        try:
            yield start
        except BaseException:
            self._set_state(start, opt)
            raise

    def run_epoch(self, data, scale, targets, order, batch_size, opt):
        """One epoch over data already on the backend (``backend.prepare_data(X)``, targets as a
        float matrix), visiting the samples in ``order``: through the backend's fused
        ``train_epoch`` when it covers this configuration, else batch by batch. Returns the
        summed loss. ``fit`` is the checked entry point; this is for code (such as the textbook
        compat layer) that prepares its data once and drives the epochs itself. An epoch that
        raises (Ctrl-C included) leaves the network as it was before it."""
        with self._undone_on_error(opt):
            return self._run_epoch(data, scale, targets, order, batch_size, opt)

    def _run_epoch(self, data, scale, targets, order, batch_size, opt, weights=None):
        be = self.backend
        if weights is None:
            total = be.train_epoch(self.layers, self.loss, data, scale, targets, order, batch_size, opt)
            if total is not None:
                opt.t += -(-len(order) // batch_size)  # the updates the epoch made
                return total
        total = 0.0
        index = be.index_array(order)
        for start in range(0, len(order), batch_size):
            idx = index[start:start + batch_size]
            x, y = be.gather(data, idx, scale), be.gather(targets, idx, 1.0)
            w = None if weights is None else weights[order[start:start + batch_size]]
            total = total + self._train_batch(x, y, opt, w)  # on a GPU: summed there, no sync per batch
        return float(total)

    def train_batch(self, x, y, opt):
        """One optimiser step on a batch already on the backend: forward, backward, update.
        Returns the batch's summed loss (before the update)."""
        return float(self._train_batch(x, y, opt))

    def _train_batch(self, x, y, opt, w=None):
        steps = self._backprop(x, y, w)
        loss = next(steps)
        total = x.shape[0] if w is None else float(np.sum(w))  # the batch's weight: its gradient's mean is over it
        for layer, dW, db in steps:  # each layer's dx is computed before it is updated
            for name, g in (("W", dW), ("b", db)):
                if name not in layer.frozen and total > 0:
                    opt.update(self.backend, layer, name, g, total)
        opt.t += 1
        return loss

    def _backprop(self, x, y, w=None):
        """Forward and backward for one batch on the backend. Yields the batch's summed loss (a
        backend scalar), then ``(layer, dW, db)`` from the last layer down (gradients summed over
        the batch). A layer's dx is computed before its gradients are yielded, so the caller may
        update that layer's parameters in place before asking for the next. ``w``: per-sample
        weights (NumPy) that scale each sample's loss and output delta."""
        be = self.backend
        cache = self._forward(x)
        z, a = cache[-1]
        yield be.loss_sum(a, y, self.loss) if w is None else be.weighted_loss_sum(a, y, self.loss, w)
        delta = be.output_delta(z, a, y, self.layers[-1].activation, self.loss)
        if w is not None:
            delta = be.scale_rows(delta, w)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            dW, db, dx = be.backward(cache[i - 1][1] if i > 0 else x, layer.W, delta, need_dx=i > 0)
            yield layer, dW, db
            if i > 0:
                delta = be.activation_backward(dx, *cache[i - 1], self.layers[i - 1].activation)

    def gradients(self, X, y):
        """Gradients of the mean loss over (X, y) with respect to every parameter, as NumPy
        arrays ``[{"W": dW, "b": db}, ...]`` (no update is made)."""
        return self.loss_and_gradients(X, y)[1]

    def loss_and_gradients(self, X, y, sample_weight=None):
        """The mean loss over (X, y) and its gradients with respect to every parameter (NumPy
        arrays ``[{"W": dW, "b": db}, ...]``), in one full-batch pass on the backend; no update
        is made (what a full-batch optimiser such as L-BFGS needs). ``sample_weight``: the
        weighted mean instead."""
        X, scale = check_inputs(X, self.layers[0].n_in)
        Y = check_targets(y, X.shape[0], self.layers[-1].n_out)
        w = check_sample_weight(sample_weight, X.shape[0])
        be = self.backend
        x = be.gather(be.prepare_data(X), np.arange(X.shape[0]), scale)
        steps = self._backprop(x, be.asarray(Y), w)
        m = X.shape[0] if w is None else float(w.sum())
        loss = float(next(steps)) / m
        grads = [{"W": np.asarray(be.to_numpy(dW)) / m, "b": np.asarray(be.to_numpy(db)) / m}
                 for _, dW, db in steps]
        return loss, grads[::-1]

    # --- persistence ----------------------------------------------------------------------
    def _config(self):
        """The architecture as saved (JSON-ready)."""
        return {"loss": self.loss, "dtype": self.dtype.name,
                "layers": [{"n_in": l.n_in, "n_out": l.n_out, "activation": l.activation.name,
                            "slope": l.activation.slope, "frozen": sorted(l.frozen)} for l in self.layers]}

    def save(self, path):
        """Save architecture and weights to an ``.npz`` file (written to a temporary name, then
        renamed, so a failed save leaves nothing half-written)."""
        path = os.fspath(path)
        config = {"format": "fastbp-network", "version": 1, **self._config()}
        arrays = {"config": np.array(json.dumps(config))}
        for i, p in enumerate(self.get_params()):
            arrays[f"W{i}"], arrays[f"b{i}"] = p["W"], p["b"]
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    @staticmethod
    def _read_npz(path, fmt):
        """``(config, arrays)`` of a fastbp ``.npz`` file of format ``fmt``; a file that is not
        one (empty, truncated, corrupted, another format) is a ValueError naming the path."""
        what = fmt.replace("fastbp-", "fastbp ")
        try:
            with open(path, "rb") as fh:  # closed here, whatever np.load makes of the bytes
                head = fh.read(4)
                if head == _ZIP_MAGIC:
                    fh.seek(0)
                    with np.load(fh, allow_pickle=False) as f:
                        config = json.loads(str(f["config"]))
                        arrays = {k: f[k] for k in f.files if k != "config"}
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise ValueError(f"{path}: not a {what} file, or a damaged one ({type(e).__name__}: {e})") from None
        if head != _ZIP_MAGIC:
            raise ValueError(f"{path}: not a {what} file ({'it is empty' if not head else 'not an .npz archive'})")
        if not isinstance(config, dict) or config.get("format") != fmt:
            raise ValueError(f"{path}: not a {what} file (format "
                             f"{config.get('format') if isinstance(config, dict) else config!r:.60})")
        return config, arrays

    @staticmethod
    def _layers_from(config, arrays):
        """``(layers, loss, dtype)`` from a saved architecture and its ``W{i}``/``b{i}`` arrays;
        KeyError, TypeError or ValueError when they do not make a network."""
        layers = []
        for i, spec in enumerate(config["layers"]):
            if f"W{i}" not in arrays or f"b{i}" not in arrays:
                raise ValueError(f"layer {i} has no weights stored")
            layers.append(Dense(spec["n_in"], spec["n_out"], (spec["activation"], spec["slope"]),
                                init=arrays[f"W{i}"], bias_init=arrays[f"b{i}"], frozen=spec["frozen"]))
        loss = check_loss(config["loss"])
        if config["dtype"] not in ("float32", "float64"):
            raise ValueError(f"dtype {config['dtype']!r}")
        return layers, loss, config["dtype"]

    @classmethod
    def load(cls, path, backend="auto", dtype=None):
        """A network saved by ``save``. A file that is not one (empty, truncated, corrupted, of
        another format, with weights that do not fit its layers) raises a ValueError that names
        the path and what is wrong."""
        path = os.fspath(path)
        config, arrays = cls._read_npz(path, "fastbp-network")
        try:
            layers, loss, file_dtype = cls._layers_from(config, arrays)
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing entry {e}" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"{path}: not a valid fastbp network file ({what})") from None
        be = cls._backend_for(backend, dtype, file_dtype)
        try:
            return cls(layers, loss=loss, backend=be)
        except ValueError as e:  # layers that do not chain, a loss that does not fit the outputs
            raise ValueError(f"{path}: not a valid fastbp network file ({e})") from None

    @staticmethod
    def _backend_for(backend, dtype, file_dtype):
        """The backend a loaded file runs on: the caller's arguments are checked first, so that
        their errors are not blamed on the file."""
        if isinstance(backend, kernels.Backend) and dtype is not None and backend.dtype != dtype:
            raise ValueError(f"dtype: {dtype!r} differs from the given backend's dtype {backend.dtype.name!r}")
        return kernels.get_backend(backend, dtype or file_dtype)
