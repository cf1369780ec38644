"""Sparse inputs: the nonzero structure of a training set, made once per ``fit`` for the numba
backend's sparse first layer (``_nb_sparse.py``), and the test of whether an input is scipy.sparse.

``SparseRows`` is compressed rows (CSR): per sample, the indices of its nonzero inputs (sorted,
uint16 while there are at most 65,536 inputs) and their values (uint8 stays uint8, scaled by 1/255
in the kernels as the dense uint8 data is; other values in the engine's float dtype). On MNIST
(19% nonzero, uint8) that is 3 bytes per nonzero: 0.58 bytes per pixel against the dense data's 1.
NumPy only; scipy is imported only when scipy.sparse input is given.
"""
from __future__ import annotations

import sys

import numpy as np

_CHUNK = 4096  # rows converted at a time (bounds the temporary boolean mask)


def is_sparse(X):
    """Whether X is a scipy.sparse matrix or array (without importing scipy when X cannot be one)."""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(X)


def density(X, max_rows=None):
    """The fraction of nonzero entries of a dense array or a scipy.sparse matrix; of a dense
    array's ``max_rows`` rows evenly spaced over it when it has more (an estimate, enough to
    choose an engine: 4,096 of Fashion-MNIST's 60,000 rows are 3 ms of counting, not 44)."""
    if is_sparse(X):
        return X.count_nonzero() / max(1, X.shape[0] * X.shape[1])
    if max_rows is not None and X.ndim == 2 and X.shape[0] > max_rows:
        X = X[::X.shape[0] // max_rows]
    return np.count_nonzero(X) / max(1, X.size)


def values_dtype(X, dtype):
    """The dtype of the stored values of X's nonzeros: uint8 stays uint8, others become ``dtype``."""
    return np.dtype(np.uint8) if X.dtype == np.uint8 else np.dtype(dtype)


def index_dtype(n_features):
    """The dtype of the column indices of rows of ``n_features`` inputs."""
    return np.uint16 if n_features <= 1 << 16 else np.int32


class SparseRows:
    """The nonzeros of a 2-D input, row by row (see the module doc): ``indptr`` (n + 1, int64),
    ``indices`` and ``values`` (one entry per nonzero; row r's are ``indptr[r]:indptr[r + 1]``)."""

    def __init__(self, indptr, indices, values, n_features):
        self.indptr, self.indices, self.values = indptr, indices, values
        self.shape = (indptr.shape[0] - 1, int(n_features))
        self.dtype = values.dtype
        self._splits = {}

    def __repr__(self):
        n, d = self.shape
        return f"SparseRows({n} x {d}, {self.nnz} nonzeros, density {self.density:.3f}, {self.nbytes:,} bytes)"

    @property
    def nnz(self):
        return int(self.indptr[-1])

    @property
    def density(self):
        n, d = self.shape
        return self.nnz / max(1, n * d)

    @property
    def nbytes(self):
        """The memory this structure takes."""
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes

    @property
    def dense_nbytes(self):
        """The memory of the same data as a dense array of its values' dtype."""
        n, d = self.shape
        return n * d * self.values.itemsize

    def split(self, fraction=0.5):
        """The input index s such that inputs below s hold about ``fraction`` of the nonzeros (the
        two-thread engine's workers own the weights of inputs [0, s) and [s, n_features)). Computed
        once per fraction."""
        if fraction not in self._splits:
            counts = np.bincount(self.indices, minlength=self.shape[1]).cumsum()
            self._splits[fraction] = (int(np.searchsorted(counts, fraction * counts[-1]) + 1) if counts[-1]
                                      else self.shape[1] // 2)
        return self._splits[fraction]

    @classmethod
    def from_array(cls, X, dtype):
        """From a dense 2-D array (uint8 kept, other values converted to ``dtype``)."""
        X = np.asarray(X)
        n, d = X.shape
        vdt = values_dtype(X, dtype)
        counts = np.empty(n, np.int64)
        parts_i, parts_v = [], []
        for lo in range(0, n, _CHUNK):
            block = X[lo:lo + _CHUNK]
            mask = block != 0
            counts[lo:lo + block.shape[0]] = mask.sum(axis=1)
            parts_i.append(np.nonzero(mask)[1].astype(index_dtype(d)))
            parts_v.append(block[mask].astype(vdt))
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        cat = (lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt))
        return cls(indptr, cat(parts_i, index_dtype(d)), cat(parts_v, vdt), d)

    @classmethod
    def from_scipy(cls, X, dtype):
        """From a scipy.sparse matrix or array (any format; made CSR with sorted indices, uint8
        values kept, others converted to ``dtype``)."""
        X = X.tocsr()
        if not X.has_sorted_indices:
            X = X.copy()
            X.sort_indices()
        vdt = values_dtype(X, dtype)
        return cls(X.indptr.astype(np.int64), X.indices.astype(index_dtype(X.shape[1])), X.data.astype(vdt),
                   X.shape[1])

    @classmethod
    def of(cls, X, dtype):
        """From whatever a fit was given: dense or scipy.sparse."""
        return cls.from_scipy(X, dtype) if is_sparse(X) else cls.from_array(X, dtype)
