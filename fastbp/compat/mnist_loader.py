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
3. IDX folders where ``fastbp.datasets`` keeps them: ``$FASTBP_DATA``, ``~/.cache/fastbp/mnist``,
   then, as a stand-in with the same shapes, ``~/.cache/fastbp/fashion-mnist`` and
   ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package). A note on
   stderr says when a stand-in is used. Nothing is downloaded (``fastbp train`` does that).

From IDX files the 60k training images are split as the book split MNIST: the first 50,000 for
training, the last 10,000 for validation; the 10k test set is the test set.
"""
from __future__ import annotations

import gzip
import os
import pickle
import sys

import numpy as np

from ._book import vectorized_result

__all__ = ["load_data", "load_data_wrapper", "vectorized_result", "find_data"]

BOOK_PLACES = ("../data/mnist.pkl.gz", "data/mnist.pkl.gz", "mnist.pkl.gz")
DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"
N_TRAIN = 50_000


def _idx_file(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _is_idx_folder(folder):
    return os.path.isdir(folder) and all(
        _idx_file(folder, f"{split}-{kind}") for split in ("train", "t10k")
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def find_data(path=None):
    """The file or folder ``load_data`` reads, and whether it is a stand-in for MNIST."""
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
    cache = os.path.join(os.path.expanduser("~"), ".cache", "fastbp")
    data = os.environ.get("FASTBP_DATA")
    candidates = ([(data, False)] if data else []) + [
        (os.path.join(cache, "mnist"), False), (os.path.join(cache, "fashion-mnist"), True),
        (DEBIAN_FASHION, True)]
    for folder, stand_in in candidates:
        if _is_idx_folder(folder):
            return folder, stand_in
    tried = list(BOOK_PLACES) + [folder for folder, _ in candidates]
    raise FileNotFoundError("no MNIST data found; tried " + ", ".join(tried) + ". Pass a path to "
                            "mnist.pkl.gz or an IDX folder, set FASTBP_MNIST or FASTBP_DATA, or install "
                            "Debian's dataset-fashion-mnist as a stand-in")


def _from_pickle(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")  # the book's file is a Python 2 pickle
    try:
        return tuple((np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)) for X, y in data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: expected the book's (training, validation, test) tuple of "
                         f"(images, labels) pairs ({e})") from None


def _from_idx(folder):
    if not _is_idx_folder(folder):
        raise FileNotFoundError(f"{folder}: expected the four IDX files train-images-idx3-ubyte, "
                                f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
                                f"(optionally .gz)")
    from ..datasets import read_idx

    arrays = {}
    for split in ("train", "t10k"):
        images = np.asarray(read_idx(_idx_file(folder, f"{split}-images-idx3-ubyte")))
        labels = np.asarray(read_idx(_idx_file(folder, f"{split}-labels-idx1-ubyte")))
        arrays[split] = ((images.reshape(len(images), -1) / np.float32(255)).astype(np.float32),
                         labels.astype(np.int64))
    (X, y), test = arrays["train"], arrays["t10k"]
    n_train = N_TRAIN if len(y) > N_TRAIN else len(y) * 5 // 6
    return (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:]), test


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
