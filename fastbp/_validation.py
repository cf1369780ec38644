"""Checks of everything a user hands in. Each error names the argument, what was expected and
what was given."""
from __future__ import annotations

import numbers

import numpy as np

from .kernels.sparse import is_sparse


def _describe(a):
    return f"array of shape {a.shape} and dtype {a.dtype}"


def check_positive_int(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)


def check_positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive number, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive number, got {value}")
    return float(value)


def check_nonneg_float(value, name, upper=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}")
    if not np.isfinite(value) or value < 0 or (upper is not None and value >= upper):
        bound = f" and < {upper}" if upper is not None else ""
        raise ValueError(f"{name}: expected a number >= 0{bound}, got {value}")
    return float(value)


def check_seed(seed, name="seed"):
    """A seed for ``np.random.default_rng``: None, an integer >= 0, or NumPy's own generator,
    bit generator or SeedSequence (used as they are)."""
    if seed is None or isinstance(seed, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name}: expected None or an integer >= 0, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{name}: expected None or an integer >= 0, got {seed}")
    return int(seed)


def _check_numeric(arr, name, what="a numeric array"):
    """Real numbers only: strings and objects are refused, and so are complex values (casting
    them to float would silently drop the imaginary part)."""
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected real numbers, got complex values (dtype {arr.dtype}); pass "
                        f"the part that is meant, e.g. {name}.real")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name}: expected {what}, got dtype {arr.dtype}")


def _as_numpy(a, name):
    if type(a).__module__.startswith("cupy"):
        return a  # device data: the cupy backend checks it
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: expected an array, got {type(a).__name__} ({e})") from None


def check_finite_array(a, name, shape=None):
    """A float64 NumPy copy of ``a``, checked for shape and NaN/inf."""
    arr = _as_numpy(a, name)
    _check_numeric(arr, name)
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    arr = np.array(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def check_inputs(X, n_features, name="X"):
    """Inputs as a 2-D array with ``n_features`` columns: uint8 stays uint8 (scaled later by 1/255),
    other numeric data must be finite. scipy.sparse inputs stay sparse (as CSR, the format the
    engines read; other formats are converted). Returns ``(X, scale)``."""
    sparse = is_sparse(X)
    if sparse:
        if len(X.shape) != 2:
            raise ValueError(f"{name}: expected a 2-D sparse matrix (n_samples, {n_features}), got shape {X.shape}")
        X = X.tocsr()
    else:
        X = _as_numpy(X, name)
        if not hasattr(X, "ndim") or X.ndim != 2:
            if getattr(X, "ndim", 0) == 3 and X.shape[1] * X.shape[2] == n_features:
                X = X.reshape(X.shape[0], -1)  # images (n, h, w) flattened
            else:
                raise ValueError(f"{name}: expected a 2-D array (n_samples, {n_features}), got shape "
                                 f"{getattr(X, 'shape', None)}")
    if X.shape[1] != n_features:
        raise ValueError(f"{name}: expected {n_features} features per sample (the network's input "
                         f"size), got {X.shape[1]}")
    if X.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one sample, got 0")
    if X.dtype == np.uint8:
        return X, 1.0 / 255.0
    values = X.data if sparse else X  # a sparse matrix's stored values
    _check_numeric(values, name)
    if values.size and not (bool(abs(values.min()) < np.inf) and bool(abs(values.max()) < np.inf)):
        # (min and max are NaN when any entry is, on NumPy and CuPy alike: two passes over X, and no
        # temporary array of its size)
        raise ValueError(f"{name}: contains NaN or infinite values")
    return X, 1.0


def check_targets(y, n_samples, n_outputs, name="y"):
    """Targets as a float matrix (n_samples, n_outputs), from integer class labels (made one-hot)
    or a float matrix. With one output, a 1-D y is taken as that output's target."""
    if type(y).__module__.startswith("cupy"):
        y = y.get()  # targets are small: made one-hot on the host, moved once by the backend
    y = _as_numpy(y, name)
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"{name}: expected labels (n_samples,) or targets (n_samples, {n_outputs}), "
                         f"got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name}: expected {n_samples} rows (one per sample of X), got {y.shape[0]}")
    _check_numeric(y, name, "numeric labels or targets")
    if y.ndim == 2:
        if y.shape[1] != n_outputs:
            raise ValueError(f"{name}: expected {n_outputs} target columns (the network's output "
                             f"size), got {y.shape[1]}")
        if not bool((abs(y) < np.inf).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        return y.astype(np.float64)
    if n_outputs == 1:
        if not bool((abs(y) < np.inf).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        return y.astype(np.float64).reshape(-1, 1)
    labels = check_labels(y, n_outputs, name)
    onehot = np.zeros((n_samples, n_outputs))
    onehot[np.arange(n_samples), labels] = 1.0
    return onehot


def check_labels(y, n_classes, name="y"):
    """Integer class labels in 0..n_classes-1 (integral floats accepted)."""
    y = _as_numpy(y, name)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected 1-D class labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise ValueError(f"{name}: expected integer class labels 0..{n_classes - 1}, got "
                             f"non-integer values of dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise ValueError(f"{name}: labels must be in 0..{n_classes - 1} (the network has {n_classes} "
                         f"outputs), got {int(y[bad][0])} at index {int(np.flatnonzero(bad)[0])}")
    return y


def check_sample_weight(sample_weight, n_samples, name="sample_weight"):
    """None, or per-sample weights as float64: one finite value >= 0 per sample, not all zero."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != (n_samples,):
        raise ValueError(f"{name}: expected shape ({n_samples},) (one weight per sample), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if (w < 0).any():
        raise ValueError(f"{name}: expected weights >= 0, got {w.min()}")
    if not w.sum() > 0:
        raise ValueError(f"{name}: the weights sum to 0")
    return w
