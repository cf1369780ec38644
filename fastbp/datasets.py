"""Data: IDX files (MNIST's format), the MNIST and Fashion-MNIST loaders, and small offline sets.

Every loader returns a ``Split(X_train, y_train, X_test, y_test, name)``: images flattened to
(n, 784) uint8 (scaling to [0, 1] is the backends' job), labels int64. Unpack the arrays with
``X, y, Xt, yt = split[:4]`` or use the attributes.

Where the files come from, for ``load_mnist``/``load_fashion_mnist``: ``data_dir``, then
``$FASTBP_DATA`` (the files themselves or a subfolder named after the dataset), then (Fashion-MNIST
only) Debian's ``/usr/share/datasets/fashion-mnist``, then the cache ``~/.cache/fastbp/<name>``
(``$XDG_CACHE_HOME`` respected), and finally a download from public mirrors. Downloads are checked
against the published MD5 checksums before they are moved into the cache; files a user supplies
are checked for structure (IDX header and length) only, since they may be subsets.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import socket
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np


class DataError(ValueError):
    """A data file is missing, corrupt or not what it should be."""


class Split(NamedTuple):
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str = "data"


# --- IDX ------------------------------------------------------------------------------------
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}
_TYPE_CODES = {np.dtype(t): code for code, t in _IDX_TYPES.items()}


def _read_bytes(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None


def read_idx(path):
    """An IDX file (raw or gzip-compressed) as a NumPy array in native byte order."""
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise DataError(f"{path}: bad magic number 0x{magic:08X} (expected 0x0000TTNN: two zero bytes, a type "
                        f"code TT among {', '.join(f'{c:02X}' for c in _IDX_TYPES)} and NN >= 1 dimensions)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, file has {len(data)}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[data[2]]).newbyteorder(">")
    expected = int(np.prod(dims)) * dtype.itemsize
    have = len(data) - header
    shape = "x".join(map(str, dims))
    if have < expected:
        raise DataError(f"{path}: truncated: header promises {shape} {dtype.name} = {expected} bytes of data, "
                        f"file has {have}")
    if have > expected:
        raise DataError(f"{path}: {have - expected} trailing bytes after the {shape} {dtype.name} data "
                        f"the header promises")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzip-compressed when the name ends with .gz), atomically."""
    array = np.asarray(array)
    if array.dtype not in _TYPE_CODES:
        raise TypeError(f"array: IDX stores {', '.join(str(np.dtype(t)) for t in _IDX_TYPES.values())}, "
                        f"got dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError("array: IDX needs at least one dimension")
    header = bytes([0, 0, _TYPE_CODES[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if os.fspath(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    _atomic_write(path, lambda f: f.write(payload))


# --- folders of four IDX files --------------------------------------------------------------
FILES = {"X_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
         "X_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def _find_file(folder, stem):
    for name in (stem + ".gz", stem):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def _has_idx_files(folder):
    return folder is not None and Path(folder).is_dir() and all(_find_file(folder, s) for s in FILES.values())


def load_idx_dir(path, name=None):
    """A ``Split`` from a folder holding the four standard IDX files (raw or .gz)."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    found = {key: _find_file(folder, stem) for key, stem in FILES.items()}
    missing = [FILES[key] + "[.gz]" for key, p in found.items() if p is None]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}")
    arrays = {key: read_idx(p) for key, p in found.items()}
    for part in ("train", "test"):
        X, y, where = arrays[f"X_{part}"], arrays[f"y_{part}"], found[f"y_{part}"]
        if X.dtype != np.uint8 or X.ndim < 2:
            raise DataError(f"{found[f'X_{part}']}: expected uint8 images, got {X.dtype} of shape {X.shape}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: expected 1-D integer labels, got {y.dtype} of shape {y.shape}")
        if len(X) != len(y):
            raise DataError(f"{where}: {len(y)} labels for {len(X)} images in {found[f'X_{part}'].name}")
    flat = {k: (np.ascontiguousarray(v.reshape(len(v), -1)) if k.startswith("X") else v.astype(np.int64))
            for k, v in arrays.items()}
    if flat["X_train"].shape[1] != flat["X_test"].shape[1]:
        raise DataError(f"{folder}: train images have {flat['X_train'].shape[1]} pixels, test images "
                        f"{flat['X_test'].shape[1]}")
    return Split(name=name or folder.name, **flat)


# --- MNIST and Fashion-MNIST: where to find them, how to fetch them ---------------------------
SOURCES = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"],
        "md5": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        "system": [],
    },
    "fashion-mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "md5": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        "system": ["/usr/share/datasets/fashion-mnist"],
    },
}
TIMEOUT = 3.0  # seconds to wait for a mirror to answer


def cache_dir(name):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastbp" / name


def find_dataset(name, data_dir=None):
    """The folder holding dataset ``name``'s four IDX files, without downloading; None if none."""
    candidates = []
    if data_dir is not None:
        candidates += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("FASTBP_DATA"):
        candidates += [Path(os.environ["FASTBP_DATA"]) / name, Path(os.environ["FASTBP_DATA"])]
    candidates += [Path(p) for p in SOURCES[name]["system"]] + [cache_dir(name)]
    return next((c for c in candidates if _has_idx_files(c)), None)


def _md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url, dest, md5):
    """Download ``url`` to ``dest`` through a temporary file; the checksum is verified before the
    rename, so a bad download never lands in the cache."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
        actual = _md5(tmp)
        if actual != md5:
            raise DataError(f"{url}: wrong checksum: expected MD5 {md5}, got {actual}; the file was discarded")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(name, folder=None):
    """Download dataset ``name``'s four files into ``folder`` (default: its cache folder), trying
    each mirror in turn; returns the folder."""
    source = SOURCES[name]
    folder = Path(folder) if folder is not None else cache_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in source["mirrors"]:
        try:
            for filename, md5 in source["md5"].items():
                if not (folder / filename).is_file():
                    _fetch(mirror + filename, folder / filename, md5)
            return folder
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
            failures.append(f"{mirror} ({getattr(e, 'reason', e)})")
    raise DataError(f"could not download {name}: no mirror answered: {'; '.join(failures)}. Offline, put the "
                    f"four IDX files in a folder and pass it as data_dir (or set FASTBP_DATA)")


def _load_named(name, data_dir=None, download_ok=True):
    folder = find_dataset(name, data_dir)
    if folder is None:
        if not download_ok:
            raise DataError(f"{name} not found (looked in data_dir, $FASTBP_DATA"
                            f"{', ' + ', '.join(SOURCES[name]['system']) if SOURCES[name]['system'] else ''}"
                            f" and {cache_dir(name)}) and downloading is off")
        folder = download(name)
    return load_idx_dir(folder, name=name)


def load_mnist(data_dir=None, download=True):
    """MNIST (60,000 training and 10,000 test digits); see the module's docstring for where it is
    looked for."""
    return _load_named("mnist", data_dir, download)


def load_fashion_mnist(data_dir=None, download=True):
    """Fashion-MNIST (60,000 + 10,000 images of clothing, MNIST's format); also found in Debian's
    ``dataset-fashion-mnist`` package."""
    return _load_named("fashion-mnist", data_dir, download)


# --- small offline data sets ----------------------------------------------------------------
def load_digits(n_train=1500):
    """scikit-learn's bundled 8x8 digits (1,797 images) as uint8 in 0..255 (pixel values 0..16
    times 255/16); the first ``n_train`` images train, the rest test."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    X = np.rint(d.data * (255 / 16)).astype(np.uint8)
    y = d.target.astype(np.int64)
    return Split(X[:n_train], y[:n_train], X[n_train:], y[n_train:], "digits")


def make_moons(n_samples=2000, noise=0.2, random_state=0, test_fraction=0.3):
    """scikit-learn's two moons (float64 features, labels 0/1), split with ``random_state=42``."""
    from sklearn.datasets import make_moons as sk_moons
    from sklearn.model_selection import train_test_split

    X, y = sk_moons(n_samples=n_samples, noise=noise, random_state=random_state)
    X_train, X_test, y_train, y_test = train_test_split(X, y.astype(np.int64), test_size=test_fraction,
                                                        random_state=42)
    return Split(X_train, y_train, X_test, y_test, "moons")


LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}


def load_dataset(name, data_dir=None, download=True):
    """A ``Split`` by name ("mnist", "fashion-mnist", "digits", "moons") or from a folder of IDX files."""
    if name in LOADERS:
        return LOADERS[name](data_dir=data_dir, download=download)
    if name == "digits":
        return load_digits()
    if name == "moons":
        return make_moons()
    if os.path.isdir(name):
        return load_idx_dir(name)
    raise ValueError(f"dataset: expected mnist, fashion-mnist, digits, moons or a folder of IDX files, got {name!r}")
