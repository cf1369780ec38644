"""scikit-learn estimators backed by fastbp: ``MLPClassifier`` and ``MLPRegressor``, drop-ins for
``sklearn.neural_network``'s.

Every constructor parameter of scikit-learn's estimators exists with the same name, default and
meaning (scikit-learn 1.9's): ``hidden_layer_sizes=(100,)``, ``activation="relu"``,
``solver="adam"`` ('lbfgs', 'sgd', 'adam'), ``alpha=1e-4``, ``batch_size="auto"`` (min(200,
n)), ``learning_rate`` ('constant', 'invscaling', 'adaptive'; solver 'sgd' only),
``learning_rate_init=1e-3``, ``power_t``, ``max_iter``, ``shuffle``, ``random_state``, ``tol``,
``verbose``, ``warm_start``, ``momentum=0.9``, ``nesterovs_momentum=True``, ``early_stopping``,
``validation_fraction``, ``beta_1``, ``beta_2``, ``epsilon``, ``n_iter_no_change``, ``max_fun``;
the regressor's ``loss`` ("squared_error", "poisson"). fastbp's own are keyword parameters: ``backend``
("auto": CuPy with a GPU, else Numba, else NumPy; a name or a backend object), ``dtype``
("float32", the default, or "float64"), and the classifier's ``loss``: "log_loss" (default:
scikit-learn's: softmax outputs, or one logistic output for two classes), "quadratic" or
"binary_cross_entropy" (a sigmoid output per class, as in Nielsen's book).

The same constructor call builds the same model as scikit-learn's: Glorot-uniform initial weights
drawn from ``random_state`` in scikit-learn's order (so the initial coefs_ equal scikit-learn's),
L2 penalty ``alpha`` (weight decay alpha / batch_size per update), the same stopping rules
(``tol``, ``n_iter_no_change``, early stopping on a held-out ``validation_fraction``), the same
learning-rate rules, ConvergenceWarning as scikit-learn raises it. ``solver="lbfgs"`` minimises
the full-batch loss with scipy's L-BFGS-B (``max_iter``, ``max_fun``, ``tol``) on loss and
gradients that fastbp's backend computes in one call. Where fastbp differs: the shuffling of each
epoch is drawn from another generator (same distribution, other orders); the L2 term of a
short last batch uses the full batch size; float32 by default.

Inputs follow scikit-learn's conventions: X is used as given (uint8 is not scaled by 1/255 as
``fastbp.Network`` scales it; fitting on uint8 warns, :class:`UnscaledInputWarning`); scipy.sparse
CSR/CSC X is accepted by fit, partial_fit and predict and stays sparse: the numba backend trains it
with its sparse first layer (``fastbp.kernels.sparse``), the others gather sparse batches; the same
results as the dense array. ``fit(X, y, sample_weight=None)``: weights scale each sample's share of the
loss and of each batch's gradient, as scikit-learn's.

Fitted attributes as scikit-learn documents them: ``coefs_``, ``intercepts_``, ``n_layers_``,
``n_outputs_``, ``out_activation_``, ``loss_``, ``best_loss_``, ``loss_curve_``,
``validation_scores_``, ``best_validation_score_``, ``t_``, ``n_iter_``, ``classes_``,
``n_features_in_``, ``feature_names_in_``; plus ``net_`` (the fastbp Network).
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # older: the estimator's own method (1.0-1.5)
    def _validate_data(estimator, X="no_validation", y="no_validation", reset=True, **kwargs):
        return estimator._validate_data(X, y, reset=reset, **kwargs)

from . import kernels
from .kernels.sparse import is_sparse
from .layers import Dense
from .network import Network
from .optim import SGD, Adam

# scikit-learn's activation names (and fastbp's own) -> fastbp's
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "sigmoid": "sigmoid", "leaky_relu": "leaky_relu"}
SOLVERS = ("lbfgs", "sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")
CLASSIFIER_LOSSES = ("log_loss", "cross_entropy", "binary_cross_entropy", "quadratic")
REGRESSOR_LOSSES = ("squared_error", "poisson")


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


def _check_number(value, name, low, high=None, integer=False, low_inclusive=True, high_inclusive=False):
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    ok = (value >= low if low_inclusive else value > low) and (
        high is None or (value <= high if high_inclusive else value < high))
    if not ok or not np.isfinite(value):
        bounds = f"{'>=' if low_inclusive else '>'} {low}" + (
            f" and {'<=' if high_inclusive else '<'} {high}" if high is not None else "")
        raise ValueError(f"{name}: expected a number {bounds}, got {value!r}")
    return value


def _stochastic(estimator):
    """partial_fit exists for the stochastic solvers only, as in scikit-learn."""
    if estimator.solver not in ("sgd", "adam"):
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. {estimator.solver} is not "
                             f"stochastic.")
    return True


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the solvers, persistence."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
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
        _check_choice(self.solver, SOLVERS, "solver")
        _check_choice(self.learning_rate, LEARNING_RATES, "learning_rate")
        if self.batch_size != "auto":
            _check_number(self.batch_size, "batch_size", 1, integer=True)
        _check_number(self.alpha, "alpha", 0)
        _check_number(self.learning_rate_init, "learning_rate_init", 0, low_inclusive=False)
        _check_number(self.power_t, "power_t", 0)
        _check_number(self.max_iter, "max_iter", 1, integer=True)
        _check_number(self.tol, "tol", 0)
        _check_number(self.momentum, "momentum", 0, 1, high_inclusive=True)
        for name in ("shuffle", "verbose", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_, numbers.Integral)):
                raise TypeError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        _check_number(self.validation_fraction, "validation_fraction", 0, 1, low_inclusive=False)
        _check_number(self.beta_1, "beta_1", 0, 1)
        _check_number(self.beta_2, "beta_2", 0, 1)
        _check_number(self.epsilon, "epsilon", 0, low_inclusive=False)
        _check_number(self.n_iter_no_change, "n_iter_no_change", 1, integer=True)
        _check_number(self.max_fun, "max_fun", 1, integer=True)
        if not isinstance(self.backend, kernels.Backend):
            kernels.resolve(self.backend)  # raises on an unknown name
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        return [int(h) for h in hidden]

    # --- the inputs -------------------------------------------------------------------------
    def _validated(self, X, y, reset, **kwargs):
        """X (float64 or float32, dense or scipy.sparse CSR/CSC) and y through scikit-learn's validation. X is not
        scaled, whatever its dtype (scikit-learn's convention): uint8 X with values above 1 gets
        an :class:`UnscaledInputWarning`, since ``fastbp.Network`` (and every backend) reads uint8
        as images and scales them by 1/255."""
        uint8 = _is_uint8(X)
        X, y = _validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32],
                              accept_sparse=["csr", "csc"], **kwargs)
        if uint8 and X.size and X.max() > 1:
            warnings.warn(f"{type(self).__name__}: X is uint8 (values 0..{int(X.max())}), and the "
                          f"estimator trains on those values, not scaled, while fastbp.Network "
                          f"scales uint8 inputs by 1/255. For images (fastbp.datasets returns uint8 "
                          f"images), pass X / 255.0, or scale X in a Pipeline (e.g. MinMaxScaler).",
                          UnscaledInputWarning, stacklevel=4)  # the caller of fit / partial_fit
        return X, y

    # --- the network ------------------------------------------------------------------------
    def _network(self, sizes, rs, backend=None):
        """The network of ``sizes`` with scikit-learn's initialisation: for each layer, coefs then
        intercepts drawn U(-r, r) from ``rs`` with r = sqrt(6 / (fan_in + fan_out)) (2 instead of
        6 for logistic units)."""
        out, loss = self._output()
        hidden = ACTIVATIONS[self.activation]
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            act = out if last else hidden
            factor = 2.0 if ACTIVATIONS[self.activation] == "sigmoid" else 6.0  # scikit-learn: the hidden units'
            r = np.sqrt(factor / (n_in + n_out))
            W = rs.uniform(-r, r, (n_in, n_out))
            b = rs.uniform(-r, r, n_out)
            layers.append(Dense(n_in, n_out, act, init=W, bias_init=b))
        return Network(layers, loss=loss, backend=backend or self.backend, dtype=np.dtype(self.dtype).name)

    def _initialize(self, X, Y, hidden, rs):
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = len(hidden) + 2
        self.out_activation_ = {"sigmoid": "logistic"}.get(self._output()[0], self._output()[0])
        self.net_ = self._network([X.shape[1]] + hidden + [Y.shape[1]], rs)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf
        self._optimizer = None

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
        return int(np.clip(self.batch_size, 1, n))

    def _l2(self, n):
        """scikit-learn's L2 term of the loss: 0.5 * alpha * sum of squared weights / n."""
        return 0.5 * self.alpha * sum(float(np.sum(W * W)) for W in self.coefs_) / n

    # --- the solvers --------------------------------------------------------------------------
    def _fit(self, X, Y, sample_weight, incremental):
        hidden = self._check_params()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not hasattr(self, "net_") or not (self.warm_start or incremental)
        rs = check_random_state(self.random_state)
        if first:
            self._initialize(X, Y, hidden, rs)
        if self.solver == "lbfgs":
            if incremental:
                raise ValueError("partial_fit: solver='lbfgs' is a full-batch method; use 'sgd' or 'adam'")
            return self._fit_lbfgs(X, Y, sample_weight)
        return self._fit_stochastic(X, Y, sample_weight, incremental, rs)

    def _new_optimizer(self):
        if self.solver == "sgd":
            opt = SGD(self.learning_rate_init, self.momentum if self.momentum < 1 else 1 - 1e-12,
                      nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        else:
            opt = Adam(self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon)
        opt.l2 = float(self.alpha)  # scikit-learn adds alpha * W to a batch's summed gradient
        return opt

    def _fit_stochastic(self, X, Y, sample_weight, incremental, rs):
        X_val = Y_val = w_val = None
        if self.early_stopping:  # drawn from random_state right after the initial weights, as scikit-learn
            X, X_val, Y, Y_val, sample_weight, w_val = self._validation_split(X, Y, sample_weight, rs)
        if self.n_iter_ == 0:  # the epochs' orders: from random_state too
            self.net_.rng = np.random.default_rng(rs.randint(np.iinfo(np.int32).max))
        n = X.shape[0]
        batch_size = self._batch_size(n)
        if not incremental or self._optimizer is None:  # scikit-learn: a new optimiser per fit
            self._optimizer = self._new_optimizer()
        opt = self._optimizer
        opt.l2 = float(self.alpha)
        stop = {"converged": False}

        def after_epoch(epoch, history):
            self.n_iter_ += 1
            self.t_ += n
            self.loss_ = float(history["loss"][-1]) / self._loss_scale() + self._l2(batch_size)  # (the epoch's
            # last weights; scikit-learn adds each batch's L2 term)
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            self._update_no_improvement_count(X_val, Y_val, w_val)
            if self.solver == "sgd" and self.learning_rate == "invscaling":  # scikit-learn's iteration_ends
                opt.lr = self.learning_rate_init / (self.t_ + 1) ** self.power_t
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if self.early_stopping else "Training loss"
                if self.solver == "sgd" and self.learning_rate == "adaptive" and opt.lr > 1e-6:
                    opt.lr /= 5.0
                    self._no_improvement_count = 0
                    if self.verbose:
                        print(f"{what} did not improve more than tol={self.tol:f} for "
                              f"{self.n_iter_no_change} consecutive epochs. Setting learning rate to {opt.lr:f}")
                    return incremental
                if self.verbose:
                    print(f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} "
                          f"consecutive epochs. Stopping.")
                stop["converged"] = True
                return True
            return incremental

        epochs = 1 if incremental else self.max_iter
        self.net_.fit(X, Y, epochs=epochs, batch_size=batch_size, optimizer=opt, lr=opt.lr,
                      shuffle=self.shuffle, callback=after_epoch, sample_weight=sample_weight)
        if self.early_stopping:
            self.net_.set_params(self._best_params)
        if not incremental and not stop["converged"] and self.n_iter_ >= self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          f"optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _update_no_improvement_count(self, X_val, Y_val, w_val):
        if self.early_stopping:
            score = self._score_outputs(X_val, Y_val, w_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self.net_.get_params()
        else:
            if self.loss_ > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_ < self.best_loss_:
                self.best_loss_ = self.loss_

    def _fit_lbfgs(self, X, Y, sample_weight):
        import scipy.optimize

        net = self.net_
        shapes = [(p["W"].shape, p["b"].shape) for p in net.get_params()]
        n = X.shape[0]

        def unpack(theta):
            params, at = [], 0
            for sw, sb in shapes:
                W = theta[at:at + int(np.prod(sw))].reshape(sw)
                at += W.size
                b = theta[at:at + sb[0]]
                at += b.size
                params.append({"W": W, "b": b})
            return params

        def loss_and_grad(theta):
            params = unpack(theta)
            net.set_params(params)
            loss, grads = net.loss_and_gradients(X, Y, sample_weight=sample_weight)
            total = n if sample_weight is None else float(np.sum(sample_weight))
            loss = loss / self._loss_scale() + 0.5 * self.alpha * sum(float(np.sum(p["W"] ** 2)) for p in params) / total
            flat = []
            for p, g in zip(params, grads):
                flat += [(g["W"] + self.alpha * p["W"] / total).ravel(), g["b"].ravel()]
            return loss, np.concatenate(flat).astype(np.float64)

        theta0 = np.concatenate([a.ravel() for p in net.get_params() for a in (p["W"], p["b"])]).astype(np.float64)
        result = scipy.optimize.minimize(loss_and_grad, theta0, method="L-BFGS-B", jac=True,
                                         options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        if self.verbose:
            print(f"L-BFGS-B: {result.nit} iterations, {result.nfev} evaluations, loss = {result.fun:.8f}")
        if result.status != 0:
            warnings.warn(f"lbfgs failed to converge after {result.nit} iteration(s) (status={result.status}):\n"
                          f"{result.message}\n\nIncrease the number of iterations to improve the convergence "
                          f"(max_iter={self.max_iter}).", ConvergenceWarning)
        net.set_params(unpack(result.x))
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        return self

    def _validation_split(self, X, Y, sample_weight, rs):
        """scikit-learn's held-out validation_fraction (stratified for a classifier with one
        output column, as scikit-learn's), drawn from ``rs``."""
        stratify = Y[:, 0] if isinstance(self, ClassifierMixin) and Y.shape[1] == 1 else None
        parts = (X, Y) if sample_weight is None else (X, Y, sample_weight)
        split = train_test_split(*parts, random_state=rs, test_size=self.validation_fraction, stratify=stratify)
        if split[1].shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                             "your dataset.")
        if sample_weight is None:
            X_tr, X_val, Y_tr, Y_val = split
            return X_tr, X_val, Y_tr, Y_val, None, None
        return split

    def _outputs(self, X):
        """Output activations, computed in float64 on the NumPy reference backend from the
        trained weights: predictions then do not depend on how X is split into batches
        (float32 BLAS results do, at the 1e-7 level)."""
        check_is_fitted(self)
        X = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32], accept_sparse=["csr", "csc"])
        be = kernels.get_backend("numpy", "float64")
        a = X.tocsr().astype(np.float64) if is_sparse(X) else be.asarray(X)  # sparse: the first product is scipy's
        for layer, p in zip(self.net_.layers, self.net_.get_params()):
            a = be.forward(a, be.asarray(p["W"]), be.asarray(p["b"]), layer.activation)[1]
        return a

    def _loss_scale(self):
        """fastbp's loss over scikit-learn's (the regressor's squared error is halved over outputs)."""
        return 1.0

    # --- the scikit-learn contract ------------------------------------------------------------
    def __getstate__(self):
        """Pickles keep the network as NumPy arrays (and its random state), not backend objects,
        so an estimator fitted on a GPU loads on a machine without one."""
        state = dict(super().__getstate__())  # a copy: the estimator keeps its network
        net = state.pop("net_", None)
        state.pop("_optimizer", None)  # its state lives on the backend; a new fit makes a new one
        if net is not None:
            state["_net_state"] = {"sizes": net.sizes, "params": net.get_params(), "rng": net.rng}
        return state

    def __setstate__(self, state):
        saved = state.pop("_net_state", None)
        super().__setstate__(state)
        self._optimizer = None
        if saved is not None:
            try:
                self.net_ = self._network(saved["sizes"], np.random.RandomState(0))
            except kernels.BackendUnavailable:  # fitted where that backend ran; predict runs on NumPy anyway
                self.net_ = self._network(saved["sizes"], np.random.RandomState(0), backend="numpy")
            self.net_.set_params(saved["params"])
            self.net_.rng = saved["rng"]

    @property
    def coefs_(self):
        """The weight matrices, (n_in, n_out) each, as in scikit-learn's MLP."""
        check_is_fitted(self, "net_")
        return [p["W"] for p in self.net_.get_params()]

    @property
    def intercepts_(self):
        check_is_fitted(self, "net_")
        return [p["b"] for p in self.net_.get_params()]

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y) (and ``sample_weight``) with the solver; returns self."""
        reset = not (self.warm_start and hasattr(self, "net_"))
        X, Y = self._targets(X, y, reset)
        return self._fit(X, Y, self._weights(sample_weight, X), incremental=False)

    @staticmethod
    def _weights(sample_weight, X):
        if sample_weight is None:
            return None
        w = _check_sample_weight(sample_weight, X, dtype=np.float64)
        return None if np.all(w == 1.0) else w

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multilayer perceptron classifier on fastbp, scikit-learn's MLPClassifier's drop-in: the
    same parameters, defaults and fitted attributes (see the module doc), plus ``loss``
    ("log_loss": softmax outputs, or one logistic output for two classes, as scikit-learn;
    "quadratic" or "binary_cross_entropy": a sigmoid output per class, as in Nielsen's book),
    ``backend`` and ``dtype``."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 loss="log_loss", backend="auto", dtype="float32"):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
                         verbose=verbose, warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         backend=backend, dtype=dtype)
        self.loss = loss

    def _binary(self):
        return self.loss in ("log_loss", "cross_entropy") and len(self.classes_) == 2

    def _output(self):
        _check_choice(self.loss, CLASSIFIER_LOSSES, "loss")
        if self.loss in ("log_loss", "cross_entropy"):
            return ("sigmoid", "binary_cross_entropy") if self._binary() else ("softmax", "cross_entropy")
        return "sigmoid", self.loss

    def _targets(self, X, y, reset, classes=None):
        """Validated X and the targets of y for the classes of this estimator: one column for two
        classes under log_loss (scikit-learn's logistic output), one-hot otherwise."""
        X, y = self._validated(X, y, reset)
        check_classification_targets(y)
        if reset:
            _check_choice(self.loss, CLASSIFIER_LOSSES, "loss")
            self.classes_ = unique_labels(y) if classes is None else unique_labels(classes)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y: labels {unknown.tolist()} are not among the classes seen in the first "
                             f"fit (classes_ = {self.classes_.tolist()})")
        if reset and len(self.classes_) < 2:
            raise ValueError(f"y: a classifier needs samples of at least 2 classes, got 1 class "
                             f"({self.classes_[0]!r})")
        index = np.searchsorted(self.classes_, y)
        if self._binary():
            return X, index.astype(np.float64).reshape(-1, 1)
        Y = np.zeros((X.shape[0], len(self.classes_)))
        Y[np.arange(X.shape[0]), index] = 1.0
        return X, Y

    @available_if(_stochastic)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), the optimiser going on from the previous call. ``classes``
        (all labels) is required on the first call."""
        first = not hasattr(self, "net_")
        if first and classes is None:
            raise ValueError("classes: expected all class labels on the first call to partial_fit, got None")
        if not first and classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(f"classes: {unique_labels(classes).tolist()} differ from the classes of the "
                             f"first call {self.classes_.tolist()}")
        X, Y = self._targets(X, y, first, classes)
        return self._fit(X, Y, self._weights(sample_weight, X), incremental=True)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in the order of classes_."""
        check_is_fitted(self)
        a = self._outputs(X)
        if self._binary():
            return np.hstack([1.0 - a, a])
        if self.loss not in ("log_loss", "cross_entropy"):  # sigmoid outputs: normalised to sum to 1
            a = np.maximum(a, 1e-12)
            a /= a.sum(axis=1, keepdims=True)
        return a

    def predict_log_proba(self, X):
        """log(predict_proba(X)), -inf where a probability is 0, as scikit-learn's."""
        p = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(p)

    def predict(self, X):
        p = self.predict_proba(X)
        return self.classes_[p.argmax(axis=1)]

    def _score_outputs(self, X, Y, w):
        p = self.predict_proba(X)
        truth = Y[:, 0].astype(int) if self._binary() else Y.argmax(axis=1)
        return float(np.average(p.argmax(axis=1) == truth, weights=w))


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multilayer perceptron regressor on fastbp, scikit-learn's MLPRegressor's drop-in:
    ``loss="squared_error"`` (identity outputs; 0.5 * mean squared error, as scikit-learn reports
    it) or ``"poisson"`` (exp outputs, half the Poisson deviance; y >= 0); parameters, defaults
    and fitted attributes as scikit-learn's (see the module doc). y may have several columns
    (multi-output regression)."""

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=15000, backend="auto", dtype="float32"):
        super().__init__(hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
                         learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
                         max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
                         verbose=verbose, warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
                         backend=backend, dtype=dtype)
        self.loss = loss

    def _output(self):
        _check_choice(self.loss, REGRESSOR_LOSSES, "loss")
        return ("exp", "poisson") if self.loss == "poisson" else ("identity", "quadratic")

    def _loss_scale(self):
        # fastbp's quadratic loss sums over the outputs, scikit-learn's squared error averages; the
        # Poisson deviance both sum
        return 1.0 if self.loss == "poisson" else float(self.n_outputs_)

    def _targets(self, X, y, reset):
        X, y = self._validated(X, y, reset, multi_output=True, y_numeric=True)
        if reset:
            self._output()  # the loss is checked before any work
            self._y_1d = y.ndim == 1
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if not reset and Y.shape[1] != self.net_.sizes[-1]:
            raise ValueError(f"y: expected {self.net_.sizes[-1]} target columns as in the first fit, "
                             f"got {Y.shape[1]}")
        return X, np.asarray(Y, dtype=np.float64)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), the optimiser going on from the previous call."""
        first = not hasattr(self, "net_")
        X, Y = self._targets(X, y, first)
        return self._fit(X, Y, self._weights(sample_weight, X), incremental=True)

    def predict(self, X):
        a = self._outputs(X)
        return a[:, 0] if self._y_1d else a

    def _score_outputs(self, X, Y, w):
        from sklearn.metrics import r2_score

        return float(r2_score(Y, self._outputs(X), sample_weight=w))

    def __sklearn_tags__(self):  # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}


__all__ = ["MLPClassifier", "MLPRegressor", "UnscaledInputWarning"]
