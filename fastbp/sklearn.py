"""scikit-learn estimators backed by fastbp: ``MLPClassifier`` and ``MLPRegressor``.

They follow scikit-learn's conventions (the constructor only stores parameters; ``fit``,
``partial_fit``, ``predict``, ``score``; fitted attributes end in ``_``), so they work in
``Pipeline``, ``cross_val_score`` and ``GridSearchCV``, and pass scikit-learn's estimator checks.

>>> from fastbp.sklearn import MLPClassifier
>>> clf = MLPClassifier(hidden_layer_sizes=(30,), max_iter=30, random_state=0).fit(X, y)
>>> clf.score(X_test, y_test)

Training is mini-batch SGD on fastbp's backends (``backend="auto"``: CuPy with a GPU, else
Numba, else NumPy). The classifier has softmax outputs with the cross-entropy loss by default
(``loss="quadratic"`` or ``"binary_cross_entropy"``: sigmoid outputs, as in Nielsen's book);
the regressor has identity outputs with the quadratic loss 0.5 * ||a - y||^2.

Inputs are used as given: uint8 X is not scaled by 1/255 as ``fastbp.Network`` scales it, and
``fit`` / ``partial_fit`` on uint8 X warn (:class:`UnscaledInputWarning`) that ``X / 255.0`` is
probably meant.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # older: the estimator's own method (1.0-1.5)
    def _validate_data(estimator, X="no_validation", y="no_validation", reset=True, **kwargs):
        return estimator._validate_data(X, y, reset=reset, **kwargs)

from . import kernels
from .network import Network

ACTIVATIONS = {"sigmoid": "sigmoid", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "leaky_relu": "leaky_relu", "identity": "identity"}
CLASSIFIER_LOSSES = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "quadratic": "sigmoid"}


class UnscaledInputWarning(UserWarning):
    """An estimator was fitted on uint8 input (images, for one): it trains on the raw 0..255
    values, which ``fastbp.Network`` would scale by 1/255."""


def _is_uint8(X):
    """Whether ``X`` holds uint8 values (a NumPy-like array, or a table whose columns all are)."""
    dtype = getattr(X, "dtype", None)
    if dtype is not None:
        return dtype == np.uint8
    dtypes = getattr(X, "dtypes", None)  # a pandas DataFrame
    try:
        return dtypes is not None and len(dtypes) > 0 and all(str(d) == "uint8" for d in dtypes)
    except TypeError:
        return False


def _check_choice(value, choices, name):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_number(value, name, low, high=None, integer=False, low_inclusive=True):
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    ok = (value >= low if low_inclusive else value > low) and (high is None or value < high)
    if not ok or not np.isfinite(value):
        bounds = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name}: expected a number {bounds}, got {value!r}")
    return value


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, training loop, persistence."""

    def __init__(self, hidden_layer_sizes=(30,), activation="sigmoid", *, batch_size=10,
                 learning_rate_init=0.1, max_iter=200, momentum=0.0, alpha=0.0, shuffle=True,
                 random_state=None, tol=1e-4, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, warm_start=False, verbose=False, backend="auto", dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.momentum = momentum
        self.alpha = alpha
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.verbose = verbose
        self.backend = backend
        self.dtype = dtype

    # --- parameters -------------------------------------------------------------------------
    def _check_params(self):
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
        for h in hidden:
            if isinstance(h, bool) or not isinstance(h, numbers.Integral) or h <= 0:
                raise ValueError(f"hidden_layer_sizes: expected positive integers, got {self.hidden_layer_sizes!r}")
        _check_choice(self.activation, ACTIVATIONS, "activation")
        if self.batch_size != "auto":
            _check_number(self.batch_size, "batch_size", 1, integer=True)
        _check_number(self.learning_rate_init, "learning_rate_init", 0, low_inclusive=False)
        _check_number(self.max_iter, "max_iter", 1, integer=True)
        _check_number(self.momentum, "momentum", 0, 1)
        _check_number(self.alpha, "alpha", 0)
        _check_number(self.tol, "tol", 0)
        _check_number(self.validation_fraction, "validation_fraction", 0, 1, low_inclusive=False)
        _check_number(self.n_iter_no_change, "n_iter_no_change", 1, integer=True)
        if not isinstance(self.backend, kernels.Backend):
            kernels.resolve(self.backend)  # raises on an unknown name
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        return [int(h) for h in hidden]

    # --- the inputs -------------------------------------------------------------------------
    def _validated(self, X, y, reset, **kwargs):
        """X (as float64 or float32) and y through scikit-learn's validation, for ``fit`` and
        ``partial_fit``. X is not scaled, whatever its dtype (scikit-learn's convention): uint8
        X with values above 1 gets an :class:`UnscaledInputWarning`, since ``fastbp.Network``
        (and every backend) reads uint8 as images and scales them by 1/255."""
        uint8 = _is_uint8(X)
        X, y = _validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32], **kwargs)
        if uint8 and X.size and X.max() > 1:
            warnings.warn(f"{type(self).__name__}: X is uint8 (values 0..{int(X.max())}), and the "
                          f"estimator trains on those values, not scaled, while fastbp.Network "
                          f"scales uint8 inputs by 1/255. For images (fastbp.datasets returns uint8 "
                          f"images), pass X / 255.0, or scale X in a Pipeline (e.g. MinMaxScaler).",
                          UnscaledInputWarning, stacklevel=4)  # the caller of fit / partial_fit
        return X, y

    # --- the network ------------------------------------------------------------------------
    def _new_network(self, sizes, seed, backend=None):
        out, loss = self._output()
        return Network.from_sizes(sizes, activation=ACTIVATIONS[self.activation], output_activation=out,
                                  loss=loss, backend=backend or self.backend, dtype=np.dtype(self.dtype).name,
                                  seed=seed)

    def _fit_epochs(self, X, Y, epochs, incremental):
        """Train for up to ``epochs`` epochs (stopping rules unless ``incremental``)."""
        first = not hasattr(self, "net_") or not (self.warm_start or incremental)
        rs = check_random_state(self.random_state)
        if first:
            hidden = self._check_params()
            self.net_ = self._new_network([X.shape[1]] + hidden + [Y.shape[1]],
                                          int(rs.randint(np.iinfo(np.int32).max)))
            self.n_iter_ = 0
            self.loss_curve_ = []
            self.best_loss_ = np.inf
        else:
            self._check_params()
        stop_early = self.early_stopping and not incremental
        if not incremental:
            self._no_improvement_count = 0
        best_params = None
        if stop_early:
            if first or not hasattr(self, "validation_scores_"):
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
            X, X_val, Y, Y_val = self._validation_split(X, Y, rs.randint(np.iinfo(np.int32).max))
            best_params = self.net_.get_params()
        n = X.shape[0]
        batch_size = min(200, n) if self.batch_size == "auto" else min(self.batch_size, n)
        weight_decay = self.alpha / batch_size
        converged = False

        def after_epoch(epoch, history):
            nonlocal best_params, converged
            self.n_iter_ += 1
            self.loss_curve_.append(history["loss"][-1])
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_curve_[-1]:.8f}")
            if incremental:
                return False
            if stop_early:
                score = self._validation_score(X_val, Y_val)
                self.validation_scores_.append(score)
                if score < self.best_validation_score_ + self.tol:
                    self._no_improvement_count += 1
                else:
                    self._no_improvement_count = 0
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best_params = self.net_.get_params()
            else:
                loss = self.loss_curve_[-1]
                if loss > self.best_loss_ - self.tol:
                    self._no_improvement_count += 1
                else:
                    self._no_improvement_count = 0
                self.best_loss_ = min(self.best_loss_, loss)
            if self._no_improvement_count >= self.n_iter_no_change:
                converged = True
                if self.verbose:
                    print(f"Training stopped: no improvement of more than tol={self.tol} for "
                          f"{self.n_iter_no_change} consecutive epochs.")
                return True
            return False

        self.net_.fit(X, Y, epochs=epochs, batch_size=batch_size, lr=self.learning_rate_init,
                      momentum=self.momentum, weight_decay=weight_decay, shuffle=self.shuffle,
                      callback=after_epoch)
        if stop_early:
            self.net_.set_params(best_params)
        if not incremental and not converged:
            warnings.warn(f"Stochastic gradient descent: maximum iterations ({self.max_iter}) reached "
                          f"and the optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _validation_split(self, X, Y, seed):
        """(X_train, X_val, Y_train, Y_val) with validation_fraction held out (stratified for a
        classifier when every class has enough samples)."""
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"early_stopping: needs at least 2 samples to hold out a validation set, "
                             f"got n_samples={n}")
        if isinstance(self, ClassifierMixin):
            try:
                return train_test_split(X, Y, test_size=self.validation_fraction, random_state=seed,
                                        stratify=Y.argmax(axis=1))
            except ValueError:  # too few samples of some class to stratify
                pass
        return train_test_split(X, Y, test_size=self.validation_fraction, random_state=seed)

    def _outputs(self, X):
        """Output activations, computed in float64 on the NumPy reference backend from the
        trained weights: predictions then do not depend on how X is split into batches
        (float32 BLAS results do, at the 1e-7 level)."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        be = kernels.get_backend("numpy", "float64")
        a = be.asarray(X)
        for layer, p in zip(self.net_.layers, self.net_.get_params()):
            a = be.forward(a, be.asarray(p["W"]), be.asarray(p["b"]), layer.activation)[1]
        return a

    # --- the scikit-learn contract ------------------------------------------------------------
    def __getstate__(self):
        """Pickles keep the network as NumPy arrays (and its random state), not backend objects,
        so an estimator fitted on a GPU loads on a machine without one."""
        state = dict(super().__getstate__())  # a copy: the estimator keeps its network
        net = state.pop("net_", None)
        if net is not None:
            state["_net_state"] = {"sizes": net.sizes, "params": net.get_params(), "rng": net.rng}
        return state

    def __setstate__(self, state):
        saved = state.pop("_net_state", None)
        super().__setstate__(state)
        if saved is not None:
            try:
                self.net_ = self._new_network(saved["sizes"], None)
            except kernels.BackendUnavailable:  # fitted where that backend ran; predict runs on NumPy anyway
                self.net_ = self._new_network(saved["sizes"], None, backend="numpy")
            self.net_.set_params(saved["params"])
            self.net_.rng = saved["rng"]

    @property
    def coefs_(self):
        """The weight matrices, (n_in, n_out) each, as in scikit-learn's MLP."""
        check_is_fitted(self)
        return [p["W"] for p in self.net_.get_params()]

    @property
    def intercepts_(self):
        check_is_fitted(self)
        return [p["b"] for p in self.net_.get_params()]

    def fit(self, X, y):
        """Train on (X, y) for up to max_iter epochs; returns self."""
        reset = not (self.warm_start and hasattr(self, "net_"))
        X, Y = self._targets(X, y, reset)
        return self._fit_epochs(X, Y, self.max_iter, incremental=False)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier trained by mini-batch SGD on fastbp.

    hidden_layer_sizes: sizes of the hidden layers; activation: "sigmoid" (alias "logistic"),
    "tanh", "relu", "leaky_relu" or "identity"; loss: "cross_entropy" (softmax outputs, default),
    "binary_cross_entropy" or "quadratic" (sigmoid outputs, as in Nielsen's book); batch_size: an
    int or "auto" (min(200, n_samples)); learning_rate_init: the SGD step; max_iter: epochs;
    alpha: L2 penalty on the weights, scikit-learn's convention (each update shrinks W by
    learning_rate_init * alpha / batch_size); tol, n_iter_no_change: stop when the training loss
    (or with early_stopping the validation accuracy, on a validation_fraction held out) has not
    improved by tol for n_iter_no_change epochs; warm_start: fit continues from the current
    weights; random_state: initial weights, shuffling and the validation split; backend: "auto",
    "numpy", "numba", "cupy" or a backend object; dtype: "float32" (default) or "float64".

    Inputs are used as given, like scikit-learn's MLPClassifier: uint8 X (such as the images of
    ``fastbp.datasets``) is not scaled to [0, 1], unlike in ``fastbp.Network``, and fitting on it
    warns (:class:`UnscaledInputWarning`); pass ``X / 255.0``, or scale X in a Pipeline.

    Fitted attributes: classes_, n_features_in_, loss_curve_ (mean training loss per epoch),
    n_iter_, best_loss_, validation_scores_ and best_validation_score_ (with early_stopping),
    coefs_, intercepts_, net_ (the fastbp Network).
    """

    def __init__(self, hidden_layer_sizes=(30,), activation="sigmoid", *, loss="cross_entropy",
                 batch_size=10, learning_rate_init=0.1, max_iter=200, momentum=0.0, alpha=0.0,
                 shuffle=True, random_state=None, tol=1e-4, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, warm_start=False, verbose=False,
                 backend="auto", dtype="float32"):
        super().__init__(hidden_layer_sizes, activation, batch_size=batch_size,
                         learning_rate_init=learning_rate_init, max_iter=max_iter, momentum=momentum,
                         alpha=alpha, shuffle=shuffle, random_state=random_state, tol=tol,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, warm_start=warm_start, verbose=verbose,
                         backend=backend, dtype=dtype)
        self.loss = loss

    def _output(self):
        _check_choice(self.loss, CLASSIFIER_LOSSES, "loss")
        return CLASSIFIER_LOSSES[self.loss], self.loss

    def _targets(self, X, y, reset, classes=None):
        """Validated X and the one-hot targets of y for the classes of this estimator."""
        X, y = self._validated(X, y, reset)
        check_classification_targets(y)
        if reset:
            self.classes_ = unique_labels(y) if classes is None else unique_labels(classes)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y: labels {unknown.tolist()} are not among the classes seen in the first "
                             f"fit (classes_ = {self.classes_.tolist()})")
        if reset and len(self.classes_) < 2:
            raise ValueError(f"y: a classifier needs samples of at least 2 classes, got 1 class "
                             f"({self.classes_[0]!r})")
        Y = np.zeros((X.shape[0], len(self.classes_)))
        Y[np.arange(X.shape[0]), np.searchsorted(self.classes_, y)] = 1.0
        return X, Y

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y). ``classes`` (all labels) is required on the first call."""
        first = not hasattr(self, "net_")
        if first and classes is None:
            raise ValueError("classes: expected all class labels on the first call to partial_fit, got None")
        if not first and classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(f"classes: {unique_labels(classes).tolist()} differ from the classes of the "
                             f"first call {self.classes_.tolist()}")
        X, Y = self._targets(X, y, first, classes)
        return self._fit_epochs(X, Y, 1, incremental=True)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in the order of classes_."""
        a = self._outputs(X)
        if self.loss != "cross_entropy":  # sigmoid outputs: normalised to sum to 1
            a = np.maximum(a, 1e-12)
            a /= a.sum(axis=1, keepdims=True)
        return a

    def predict_log_proba(self, X):
        p = self.predict_proba(X)
        return np.log(np.maximum(p, np.finfo(p.dtype).tiny))  # in p's own dtype: 1e-300 is 0 in float32

    def predict(self, X):
        a = self._outputs(X)
        return self.classes_[a.argmax(axis=1)]

    def _validation_score(self, X, Y):
        return float(np.mean(self._outputs(X).argmax(axis=1) == Y.argmax(axis=1)))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor trained by mini-batch SGD on fastbp: identity outputs,
    quadratic loss. Parameters as for MLPClassifier (without ``loss``); early stopping uses R^2
    on the held-out fraction. y may have several columns (multi-output regression). uint8 X is
    not scaled (fitting on it warns), as for MLPClassifier."""

    def __init__(self, hidden_layer_sizes=(30,), activation="sigmoid", *, batch_size=10,
                 learning_rate_init=0.01, max_iter=200, momentum=0.0, alpha=0.0, shuffle=True,
                 random_state=None, tol=1e-4, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, warm_start=False, verbose=False, backend="auto", dtype="float32"):
        super().__init__(hidden_layer_sizes, activation, batch_size=batch_size,
                         learning_rate_init=learning_rate_init, max_iter=max_iter, momentum=momentum,
                         alpha=alpha, shuffle=shuffle, random_state=random_state, tol=tol,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, warm_start=warm_start, verbose=verbose,
                         backend=backend, dtype=dtype)

    def _output(self):
        return "identity", "quadratic"

    def _targets(self, X, y, reset):
        X, y = self._validated(X, y, reset, multi_output=True, y_numeric=True)
        if reset:
            self._y_1d = y.ndim == 1
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if not reset and Y.shape[1] != self.net_.sizes[-1]:
            raise ValueError(f"y: expected {self.net_.sizes[-1]} target columns as in the first fit, "
                             f"got {Y.shape[1]}")
        return X, np.asarray(Y, dtype=np.float64)

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing from the current weights."""
        first = not hasattr(self, "net_")
        X, Y = self._targets(X, y, first)
        return self._fit_epochs(X, Y, 1, incremental=True)

    def predict(self, X):
        a = self._outputs(X)
        return a[:, 0] if self._y_1d else a

    def _validation_score(self, X, Y):
        from sklearn.metrics import r2_score

        if len(Y) < 2:  # R^2 needs two samples: the negative squared error instead
            return -float(np.sum((self._outputs(X) - Y) ** 2))
        return float(r2_score(Y, self._outputs(X)))

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}


__all__ = ["MLPClassifier", "MLPRegressor", "UnscaledInputWarning"]
