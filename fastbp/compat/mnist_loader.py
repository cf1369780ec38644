"""Nielsen's ``mnist_loader.py``: the book's data as lists of ``(x, y)`` pairs.

    import fastbp.compat.mnist_loader as mnist_loader
    training_data, validation_data, test_data = mnist_loader.load_data_wrapper()

``load_data(path=None)`` returns ``(training_data, validation_data, test_data)``, each a pair
``(images float32 (n, 784) in [0, 1], labels int64 (n,))``; ``load_data_wrapper(path=None)``
returns lists of ``(x, y)`` with x a (784, 1) column and y a one-hot (10, 1) column for training,
an int label for validation and test. (The book's Python 3 version returns ``zip`` iterators;
lists work everywhere those do and can be read more than once.)

Where the data comes from (the first that exists):

1. ``path`` or the environment variable ``FASTBP_MNIST``: the book's ``mnist.pkl.gz`` (a Python 2
   pickle), or a folder of IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``);
2. the book's own places: ``../data/mnist.pkl.gz``, ``data/mnist.pkl.gz``, ``mnist.pkl.gz``;
3. where ``fastbp.datasets`` finds MNIST's IDX files (``$FASTBP_DATA``, the cache
   ``~/.cache/fastbp/mnist``), then, as a stand-in with the same shapes, Fashion-MNIST (there, or
   Debian's ``/usr/share/datasets/fashion-mnist``); a note on stderr says when it stands in.
   Nothing is downloaded (``fastbp train`` downloads MNIST into the cache).

A file that is corrupt or not what it should be (truncated or bad gzip data, an empty file, not a
pickle, not the book's three (images, labels) pairs) raises ``fastbp.datasets.DataError``, a
``ValueError`` that names the file and what is wrong with it.

From IDX files the 60k training images are split as the book split MNIST: the first 50,000 for
training, the last 10,000 for validation; the 10k test set is the test set.
"""
from __future__ import annotations

import os
import pickle
import sys

import numpy as np

from ._book import vectorized_result

__all__ = ["load_data", "load_data_wrapper", "vectorized_result", "find_data"]

BOOK_PLACES = ("../data/mnist.pkl.gz", "data/mnist.pkl.gz", "mnist.pkl.gz")
N_TRAIN = 50_000


def find_data(path=None):
    """The file or folder ``load_data`` reads, and whether it is a stand-in for MNIST."""
    from .. import datasets

    if path is None:
        path = os.environ.get("FASTBP_MNIST") or None
    if path is not None:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"path: {path!r} does not exist (expected the book's mnist.pkl.gz "
                                    f"or a folder of MNIST IDX files)")
        return path, False
    for place in BOOK_PLACES:
        if os.path.isfile(place):
            return place, False
    folder = datasets.find_mnist()
    if folder is not None:
        return os.fspath(folder), False
    folder = datasets.find_fashion_mnist()
    if folder is not None:
        return os.fspath(folder), True
    raise FileNotFoundError(
        f"no MNIST data found: not in {', '.join(BOOK_PLACES)}, nor where fastbp.datasets looks "
        f"($FASTBP_DATA, {datasets.cache_dir('mnist')}), and no Fashion-MNIST to stand in. Pass a "
        f"path to mnist.pkl.gz or an IDX folder, set FASTBP_MNIST or FASTBP_DATA, or run "
        f"`fastbp train` once to download MNIST into the cache")


SPLITS = ("training", "validation", "test")


def _from_pickle(path):
    """The book's three ``(images, labels)`` pairs from its ``mnist.pkl.gz`` (gzip-compressed or
    not: told by the file's first bytes). Anything else raises :class:`fastbp.datasets.DataError`
    (a ValueError) naming the file and what is wrong with it."""
    from ..datasets import DataError, _file_bytes

    raw, compressed = _file_bytes(path)  # corrupt gzip data: DataError naming the file
    after = " (after decompression)" if compressed else ""
    if not raw:
        raise DataError(f"{path}: empty file{after}; expected the book's mnist.pkl.gz, a pickled "
                        f"(training, validation, test) tuple")
    try:
        data = pickle.loads(raw, encoding="latin1")  # the book's file is a Python 2 pickle
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as e:
        note = ", and the name ends in .gz, but the file is not gzip-compressed" \
            if path.endswith(".gz") and not compressed else ""
        raise DataError(f"{path}: not a pickle ({type(e).__name__}: {e}){after}{note}; expected the "
                        f"book's mnist.pkl.gz") from None
    return _check_book_splits(path, data)


def _check_book_splits(path, data):
    """The unpickled ``(training, validation, test)`` tuple as float32 images and int64 labels,
    checked: three (images (n, pixels), integer labels 0..9 (n,)) pairs, one pixel count."""
    from ..datasets import DataError

    expected = "expected the book's (training, validation, test) tuple of (images, labels) pairs"
    if not isinstance(data, (tuple, list)) or len(data) != 3:
        got = f"a {type(data).__name__} of {len(data)}" if isinstance(data, (tuple, list)) else type(data).__name__
        raise DataError(f"{path}: {expected}, got {got}")
    splits = []
    for split, pair in zip(SPLITS, data):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DataError(f"{path}: {split}: {expected}, got {type(pair).__name__} for the {split} pair")
        X, y = (np.asarray(a) for a in pair)
        if X.dtype.kind not in "biuf":
            raise DataError(f"{path}: {split} images: expected numbers, got {X.dtype}")
        if X.ndim != 2:
            raise DataError(f"{path}: {split} images: expected a 2-D array (n, pixels), (n, 784) in the "
                            f"book's file, got shape {X.shape}")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DataError(f"{path}: {split} labels: expected integer labels, got {y.dtype} of shape {y.shape}")
        if len(y) != len(X):
            raise DataError(f"{path}: {split}: {len(y)} labels for {len(X)} images")
        if len(y) and (y.min() < 0 or y.max() > 9):
            bad = y.min() if y.min() < 0 else y.max()
            raise DataError(f"{path}: {split} labels: expected digit classes 0..9, found {bad}")
        if splits and X.shape[1] != splits[0][0].shape[1]:
            raise DataError(f"{path}: {split} images have {X.shape[1]} pixels, {SPLITS[0]} images "
                            f"{splits[0][0].shape[1]}")
        splits.append((np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)))  # no copy if already so
    return tuple(splits)


def _from_idx(folder):
    """The book's three splits from an IDX folder: the first 50,000 training images train (5/6
    of them for smaller sets), the rest validate; the test set tests. Images as x / 255."""
    from ..datasets import load_idx_dir

    split = load_idx_dir(folder)
    scale = lambda X: X.astype(np.float32) / np.float32(255)  # noqa: E731
    X, y = scale(split.X_train), split.y_train
    n_train = N_TRAIN if len(y) > N_TRAIN else len(y) * 5 // 6
    return (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:]), (scale(split.X_test), split.y_test)


def load_data(path=None):
    """``(training_data, validation_data, test_data)``, each ``(images (n, 784), labels (n,))``."""
    path, stand_in = find_data(path)
    if stand_in:
        print(f"mnist_loader: MNIST not found; using Fashion-MNIST from {path} as a stand-in",
              file=sys.stderr)
    return _from_idx(path) if os.path.isdir(path) else _from_pickle(path)


def load_data_wrapper(path=None):
    """The book's format: ``training_data`` as (x (784, 1), one-hot y (10, 1)) pairs,
    ``validation_data`` and ``test_data`` as (x (784, 1), int label) pairs, all lists."""
    tr_d, va_d, te_d = load_data(path)
    training_data = [(x.reshape(-1, 1), vectorized_result(y)) for x, y in zip(*tr_d)]
    validation_data = [(x.reshape(-1, 1), int(y)) for x, y in zip(*va_d)]
    test_data = [(x.reshape(-1, 1), int(y)) for x, y in zip(*te_d)]
    return training_data, validation_data, test_data
