"""What the compat versions of Nielsen's ``network.py`` and ``network2.py`` share.

The book's lists ``weights`` (shapes (y, x)) and ``biases`` (shapes (y, 1)) are the truth: plain
float64 NumPy arrays that a user reads, replaces or edits in place, exactly as in the book. Every
call that computes (``SGD``, ``evaluate``, ``update_mini_batch``, ``backprop``...) first copies
them into a fastbp ``Network`` (transposed to fastbp's (x, y) layout), runs there on the fast
backend, and copies the result back as new arrays, as the book's ``update_mini_batch`` does.

Same seed, same numbers: the initial weights are drawn with ``np.random.randn`` in the book's
order, and each epoch shuffles with ``random.shuffle`` on a list as long as the training data,
so the mini-batches are those of the book run with the same ``random``/``np.random`` seeds.
"""
from __future__ import annotations

import numbers
import random

import numpy as np

from ..kernels.numpy_backend import sigmoid, sigmoid_prime  # noqa: F401  (the book's functions)

#: Defaults for every compat network: ``backend`` ("auto": numba on CPU when available) and
#: ``dtype`` ("float64", the book's precision; "float32" is faster). Change with ``configure``.
DEFAULTS = {"backend": "auto", "dtype": "float64"}


def configure(backend=None, dtype=None):
    """Set the backend and/or dtype used by compat networks built afterwards (a book script
    then needs no other change), e.g. ``network.configure(dtype="float32")``."""
    from .. import kernels

    if backend is not None:
        if not isinstance(backend, kernels.Backend):
            kernels.resolve(backend)  # raises on an unknown name
        DEFAULTS["backend"] = backend
    if dtype is not None:
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        DEFAULTS["dtype"] = np.dtype(dtype).name
    return dict(DEFAULTS)


def vectorized_result(j, n=10):
    """A (n, 1) column with 1.0 in position j and zeros elsewhere (the book's one-hot target)."""
    e = np.zeros((n, 1))
    e[j] = 1.0
    return e


def _label_of(y, n_out, where):
    """The class index of target ``y``: an int label, or a one-hot column (n_out, 1) / (n_out,)."""
    if isinstance(y, (numbers.Integral, np.integer)) and not isinstance(y, bool):
        label = int(y)
    elif isinstance(y, np.ndarray) and y.ndim == 0 and np.issubdtype(y.dtype, np.integer):
        label = int(y)
    else:
        y = np.asarray(y) if isinstance(y, (list, tuple)) else y
        if not isinstance(y, np.ndarray) or y.shape not in ((n_out, 1), (n_out,)):
            got = f"shape {y.shape}" if isinstance(y, np.ndarray) else f"{type(y).__name__} {y!r:.40}"
            raise ValueError(f"{where}: expected y as an int label or a one-hot column of shape "
                             f"({n_out}, 1), got {got}")
        flat = y.reshape(-1)
        label = int(np.argmax(flat))
        if not (flat[label] == 1 and np.count_nonzero(flat) == 1):
            raise ValueError(f"{where}: expected a one-hot target column of shape ({n_out}, 1) "
                             f"(one 1.0, the rest 0.0), got values {flat.tolist()}")
        return label
    if not 0 <= label < n_out:
        raise ValueError(f"{where}: expected a label in 0..{n_out - 1}, got {label}")
    return label


def as_arrays(data, n_in, n_out, name="training_data", dtype=np.float64):
    """The book's data (a list or iterator of ``(x, y)`` pairs, x a (n_in, 1) column, y a one-hot
    (n_out, 1) column or an int label) as batch-major arrays ``(X (n, n_in), labels (n,))``.
    Malformed pairs raise ValueError/TypeError naming the element's index."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray) \
            and data[0].ndim == 2 and data[0].shape[1] == n_in:
        raise TypeError(f"{name}: expected a list of (x, y) pairs as the book's mnist_loader makes "
                        f"them, got a pair of arrays; use fastbp.Network.fit(X, y) for arrays, or "
                        f"list(zip(...)) of columns")
    try:
        data = data if isinstance(data, list) else list(data)
    except TypeError:
        raise TypeError(f"{name}: expected a list or iterator of (x, y) pairs, got "
                        f"{type(data).__name__}") from None
    if not data:
        raise ValueError(f"{name}: expected at least one (x, y) pair, got none")
    fast = _as_arrays_fast(data, n_in, n_out, dtype)
    if fast is not None:
        return fast
    # element by element: finds and names the first malformed pair
    X = np.empty((len(data), n_in), dtype=dtype)
    labels = np.empty(len(data), dtype=np.int64)
    for i, pair in enumerate(data):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"{name}[{i}]: expected a pair (x, y), got {type(pair).__name__}")
        x, y = pair
        if not isinstance(x, np.ndarray) or x.shape not in ((n_in, 1), (n_in,)):
            got = f"shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{name}[{i}]: expected x of shape ({n_in}, 1), got {got}")
        X[i] = x.reshape(-1)
        labels[i] = _label_of(y, n_out, f"{name}[{i}]")
    if not np.isfinite(X).all():
        i = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise ValueError(f"{name}[{i}]: x contains NaN or infinite values")
    return X, labels


def _as_arrays_fast(data, n_in, n_out, dtype):
    """``as_arrays`` for well-formed data with whole-array operations; None when anything is
    unusual (the element-by-element path then names the problem)."""
    try:
        xs, ys = zip(*data)
    except (TypeError, ValueError):
        return None
    if not (all(type(x) is np.ndarray and x.shape == (n_in, 1) for x in xs)):
        return None
    X = np.stack(xs, dtype=dtype).reshape(len(xs), n_in)
    if not np.isfinite(X).all():
        return None
    if all(type(y) is np.ndarray and y.shape == (n_out, 1) for y in ys):
        Y = np.stack(ys).reshape(len(ys), n_out)
        if not (((Y == 0) | (Y == 1)).all() and (Y.sum(axis=1) == 1).all()):
            return None
        return X, Y.argmax(axis=1).astype(np.int64)
    if all(type(y) is int or type(y) is np.int64 for y in ys):
        labels = np.array(ys, dtype=np.int64)
        if labels.min() < 0 or labels.max() >= n_out:
            return None
        return X, labels
    return None


def _float_array(value, name):
    """``value`` (an array or nested lists of numbers) as a float64 array; a ValueError naming
    the first entry that is not a number (``weights[0][4][6]``: text, None, ...), or saying that
    the rows have different lengths."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):  # ragged nested lists
        a = None
    if a is not None and a.dtype.kind in "biuf":
        return a.astype(np.float64, copy=False)

    def first_bad(v, where):
        if isinstance(v, np.ndarray):
            if v.dtype.kind in "biuf":
                return None
            v = v.tolist()
        if isinstance(v, (list, tuple)):
            return next((bad for k, item in enumerate(v) if (bad := first_bad(item, f"{where}[{k}]"))), None)
        return None if isinstance(v, (numbers.Real, np.number)) else f"{where}: expected a number, got {v!r:.40}"

    bad = first_bad(value, name)
    if bad:
        raise ValueError(bad)
    try:  # numbers only, e.g. an object array of floats
        return np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise ValueError(f"{name}: expected a matrix of numbers, got rows of different lengths") from None


def one_hot(labels, n_out, dtype=np.float64):
    Y = np.zeros((len(labels), n_out), dtype=dtype)
    Y[np.arange(len(labels)), labels] = 1.0
    return Y


class BookNetwork:
    """The common part of ``network.Network`` and ``network2.Network`` (sigmoid layers)."""

    loss = "quadratic"  # the fastbp loss the training runs with

    def __init__(self, sizes, backend=None, dtype=None):
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"sizes: expected a list of at least two positive layer sizes, got {sizes!r:.40}") from None
        if len(sizes) < 2 or not all(isinstance(s, numbers.Integral) and s > 0 for s in sizes):
            raise ValueError(f"sizes: expected a list of at least two positive layer sizes, got {sizes}")
        self.num_layers = len(sizes)
        self.sizes = sizes
        self.backend = DEFAULTS["backend"] if backend is None else backend
        self.dtype = np.dtype(DEFAULTS["dtype"] if dtype is None else dtype).name
        self._net = None  # the fastbp Network, made on first use

    # --- the two representations ----------------------------------------------------------
    def _checked_params(self, finite=False):
        """The book's lists checked against ``sizes``, as fastbp params (W (x, y), b (y,)).
        ``finite``: NaN and infinite entries are an error too."""
        n = self.num_layers - 1
        for name in ("weights", "biases"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
                raise ValueError(f"{name}: expected a list (one array per layer), got {value!r:.40}")
            if len(value) != n:
                raise ValueError(f"{name}: expected {n} arrays (one per layer), got {len(value)}")
        params = []
        for i, (w, b, x, y) in enumerate(zip(self.weights, self.biases, self.sizes, self.sizes[1:])):
            w, b = _float_array(w, f"weights[{i}]"), _float_array(b, f"biases[{i}]")
            if w.shape != (y, x):
                raise ValueError(f"weights[{i}]: expected shape ({y}, {x}), got {w.shape}")
            if b.shape not in ((y, 1), (y,)):
                raise ValueError(f"biases[{i}]: expected shape ({y}, 1), got {b.shape}")
            for name, a in ((f"weights[{i}]", w), (f"biases[{i}]", b)):
                if finite and not np.isfinite(a).all():
                    raise ValueError(f"{name}: contains NaN or infinite values")
            params.append({"W": w.T, "b": b.reshape(-1)})
        return params

    def _push(self):
        """Copy the book's weights into the fastbp network (made on first use); returns it."""
        params = self._checked_params()
        if self._net is None:
            from ..layers import Dense
            from ..network import Network

            layers = [Dense(p["W"].shape[0], p["W"].shape[1], "sigmoid", init=p["W"], bias_init=p["b"])
                      for p in params]
            self._net = Network(layers, loss=self.loss, backend=self.backend, dtype=self.dtype)
        else:
            self._net.set_params(params)
        return self._net

    def _pull(self):
        """The fastbp network's weights back into the book's lists (new float64 arrays)."""
        params = self._net.get_params()
        self.weights = [np.array(p["W"].T, dtype=np.float64) for p in params]
        self.biases = [np.array(p["b"], dtype=np.float64).reshape(-1, 1) for p in params]

    def _as_arrays(self, data, name):
        return as_arrays(data, self.sizes[0], self.sizes[-1], name, dtype=self.dtype)

    # --- the book's methods -----------------------------------------------------------------
    def feedforward(self, a):
        """The output for input column ``a`` (n_in, 1): a column (n_out, 1). Several columns
        (n_in, k) give (n_out, k); a 1-D ``a`` of shape (n_in,) is taken as one column, as
        training takes it, and gives (n_out, 1) (the book's broadcasting made it (n_out, n_hidden))."""
        a = np.asarray(a)
        n_in = self.sizes[0]
        if a.ndim == 1 and a.shape[0] == n_in:
            a = a.reshape(n_in, 1)
        if a.ndim != 2 or a.shape[0] != n_in:
            raise ValueError(f"feedforward: expected a of shape ({n_in}, 1) (or ({n_in},), or columns "
                             f"({n_in}, k)), got shape {a.shape}")
        for b, w in zip(self.biases, self.weights):
            b = np.asarray(b)  # 1-D biases (y,), which training accepts, are columns here too
            a = sigmoid(np.dot(w, a) + (b.reshape(-1, 1) if b.ndim == 1 else b))
        return a

    def _outputs(self, X):
        """Output activations (n, n_out) for batch-major inputs, on the fast backend."""
        return self._push().predict_proba(X)

    def _correct(self, X, labels):
        return int(np.sum(self._outputs(X).argmax(axis=1) == labels))

    def evaluate(self, test_data):
        """The number of inputs whose largest output is the right label."""
        return self._correct(*self._as_arrays(test_data, "test_data"))

    def cost_derivative(self, output_activations, y):
        """dC_x/da for the quadratic cost."""
        return output_activations - y

    def backprop(self, x, y):
        """``(nabla_b, nabla_w)``: the gradient of the cost for one sample, in the book's shapes."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.shape not in ((self.sizes[0], 1), (self.sizes[0],)):
            raise ValueError(f"x: expected shape ({self.sizes[0]}, 1), got {x.shape}")
        if y.shape not in ((self.sizes[-1], 1), (self.sizes[-1],)):
            raise ValueError(f"y: expected shape ({self.sizes[-1]}, 1), got {y.shape}")
        grads = self._push().gradients(x.reshape(1, -1), y.reshape(1, -1))
        return ([g["b"].reshape(-1, 1) for g in grads], [g["W"].T.copy() for g in grads])

    def _update(self, mini_batch, eta, weight_decay):
        from ..optim import SGD

        X, labels = self._as_arrays(mini_batch, "mini_batch")
        net = self._push()
        be = net.backend
        net.train_batch(be.asarray(X), be.asarray(one_hot(labels, self.sizes[-1])),
                        SGD(eta, weight_decay=weight_decay))
        self._pull()

    def _sgd(self, train, epochs, mini_batch_size, eta, weight_decay=0.0, after_epoch=None):
        """The book's SGD loop on the fast backend, for ``train = (X, labels)`` from ``_as_arrays``:
        per epoch ``random.shuffle`` of the order, then mini-batches of ``mini_batch_size`` in that
        order; ``after_epoch(j)`` returning True stops."""
        from .. import training
        from .._validation import check_positive_int
        from ..optim import SGD

        epochs = check_positive_int(epochs, "epochs")
        m = check_positive_int(mini_batch_size, "mini_batch_size")
        opt = SGD(eta, weight_decay=weight_decay)
        X, labels = train
        n = X.shape[0]
        m = min(m, n)
        net = self._push()
        # one training plan for the whole call, as Network.fit makes (the sparse first layer on
        # MNIST's mostly-zero digits, the members' epochs undone on Ctrl-C or divergence)
        run = training.Run([net], [opt], X, 1.0, one_hot(labels, self.sizes[-1]), m, shuffle=True)
        run.warmup()
        order = list(range(n))  # the book shuffles its list in place, epoch after epoch
        try:
            for j in range(epochs):
                random.shuffle(order)
                run.epoch(j + 1, {0: np.array(order, dtype=np.int64)})
                if after_epoch is not None:
                    run.sync()
                    self._pull()
                    if after_epoch(j):
                        break
        finally:
            run.sync()
        self._pull()
