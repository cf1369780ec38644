"""Data: IDX files (MNIST's format), the MNIST and Fashion-MNIST loaders, and two small offline sets.

Every loader returns a :class:`Split`, a named tuple ``(X_train, y_train, X_test, y_test, name)``.
Images are flattened to ``(n, 784)`` and stay uint8 in 0..255 (scaling to [0, 1] happens in the
backends); labels are int64. Use the attributes (``split.X_train``), or unpack the arrays with
``X, y, Xt, yt = split[:4]`` (``X, y, Xt, yt, name = split`` unpacks all five).

Where ``load_mnist`` and ``load_fashion_mnist`` look for the four IDX files
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each raw or ``.gz``), taking the first folder that holds all four:

1. ``data_dir``, then its subfolder named after the dataset (``mnist`` or ``fashion-mnist``);
2. ``$FASTBP_DATA/<name>``, then ``$FASTBP_DATA`` itself (a bare ``$FASTBP_DATA`` is taken for
   whichever dataset is asked for: keep datasets in named subfolders when you have more than one);
3. for Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``
   (``apt-get install dataset-fashion-mnist``);
4. the cache, ``~/.cache/fastbp/<name>`` (``$XDG_CACHE_HOME/fastbp/<name>`` when that is set);
5. with ``download=True``, a download from public mirrors into the cache. A mirror gets ``TIMEOUT``
   seconds to answer and ``DEADLINE`` seconds for each whole file; one that fails (or is slower) is
   named on stderr and the next is tried; nothing half-downloaded is ever left behind.

Checksums: files that fastbp downloads are checked against the published MD5 checksums of the
``.gz`` files before they are moved into the cache, so a bad download never lands there. Files
that a user supplies (``data_dir``, ``$FASTBP_DATA``, Debian's package, anything put in the cache
by hand) are checked for structure only (IDX header, dimensions, length, label counts), since
they may be subsets or recompressed copies: Debian's Fashion-MNIST ``.gz`` files, for one, hold
the same data as the originals but were compressed again and have other checksums.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._io import atomic_write

__all__ = ["DataError", "DataNotFoundError", "DownloadTooSlow", "Split", "read_idx", "write_idx", "load_idx_dir", "load_mnist",
           "load_fashion_mnist", "find_dataset", "find_mnist", "find_fashion_mnist", "mnist_available",
           "download_dataset", "cache_dir", "load_digits", "make_moons", "load_dataset", "DATASETS"]


class DataError(ValueError):
    """A data file is corrupt, malformed, or not what it should be."""


class DataNotFoundError(DataError):
    """A dataset's files are not there and could not be downloaded."""


class Split(NamedTuple):
    """A train/test split. ``X, y, Xt, yt = split[:4]`` unpacks the four arrays."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str = "data"


# --- IDX files ------------------------------------------------------------------------------
# The magic number is 0x00 0x00 TYPE NDIM; then NDIM big-endian uint32 dimensions; then the data,
# big-endian, row-major.
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_TYPE_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
_KNOWN_TYPES = ", ".join(f"0x{code:02X} {dtype.name}" for code, dtype in IDX_TYPES.items())
GZIP_MAGIC = b"\x1f\x8b"


def _file_bytes(path):
    """The file's contents, decompressed when it starts with gzip's magic bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != GZIP_MAGIC:
        return raw, False
    try:
        return gzip.decompress(raw), True
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None


def _parse_header(data):
    """``(dtype, dims, header length)`` of an IDX file's bytes; DataError if the header is bad."""
    if len(data) < 4:
        raise DataError(f"too short for an IDX header: {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"bad magic number 0x{magic:08X} (expected 0x0000TTNN: two zero bytes, a type code "
                        f"TT, then NN the number of dimensions, e.g. 0x00000803 for uint8 images)")
    if data[2] not in IDX_TYPES:
        raise DataError(f"bad magic number 0x{magic:08X}: unknown data type code 0x{data[2]:02X} "
                        f"(known: {_KNOWN_TYPES})")
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"magic number 0x{magic:08X} says 0 dimensions (expected at least 1)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"truncated header: {ndim} dimensions need {header} bytes, file has {len(data)}")
    return IDX_TYPES[data[2]], struct.unpack(f">{ndim}I", data[4:header]), header


def read_idx(path):
    """Read an IDX file, raw or gzip-compressed, as a NumPy array in native byte order.

    Compression is detected by gzip's magic bytes, not by the name. The magic number, the number of
    dimensions and the length (header + product of dimensions x item size, exactly) are checked; a
    bad file raises :class:`DataError` naming the file and what is wrong with it.
    """
    path = os.fspath(path)
    data, compressed = _file_bytes(path)
    try:
        dtype, dims, header = _parse_header(data)
    except DataError as e:
        note = ""
        if path.endswith(".gz") and not compressed:
            note = " (the name ends in .gz, but the file is not gzip-compressed)"
        raise DataError(f"{path}: {e}{note}") from None
    expected = math.prod(dims) * dtype.itemsize
    have = len(data) - header
    if have != expected:
        problem = "truncated" if have < expected else f"{have - expected} trailing bytes"
        where = " (after decompression)" if compressed else ""
        raise DataError(f"{path}: {problem}: header promises {'x'.join(map(str, dims))} {dtype.name} = "
                        f"{expected} bytes of data, file has {have}{where}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def write_idx(path, array):
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends with ``.gz``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (others raise TypeError; convert
    first, e.g. ``labels.astype(np.uint8)``). The file is written atomically: under a temporary name
    in the same folder, then renamed, so a failure leaves no partial file behind.
    """
    array = np.asarray(array)
    code = _TYPE_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"write_idx: IDX cannot store dtype {array.dtype} (supported: {_KNOWN_TYPES})")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    with atomic_write(path) as f:
        if os.fspath(path).endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="wb", filename="", mtime=0) as gz:
                gz.write(header)
                gz.write(data)
        else:
            f.write(header)
            f.write(data)


# --- folders of the four standard IDX files ---------------------------------------------------
FILES = {"X_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
         "X_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def _find_file(folder, stem):
    """``folder/stem``, raw or .gz (also the common ``train-images.idx3-ubyte`` spelling), as
    ``(path, None)``; ``(None, why)`` when none of those names is a regular file: ``why`` is None
    when nothing has any of the names, else what is there instead ("NAME is a directory, not a
    file")."""
    dotted = stem.replace("-idx", ".idx")
    why = None
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = Path(folder) / name
        if path.is_file():
            return path, None
        if why is None:
            if path.is_dir():
                why = f"{name} is a directory, not a file"
            elif path.is_symlink() and not path.exists():
                why = f"{name} is a broken symbolic link"
            elif path.exists():
                why = f"{name} is not a regular file"
    return None, why


def _folder_problems(folder):
    """What keeps ``folder`` from holding the four standard files, as ``(wrong, missing)``:
    ``wrong`` says what stands where a file should be ("train-images-idx3-ubyte.gz is a directory,
    not a file"), ``missing`` lists the standard names with nothing there (all four when
    ``folder`` is not a folder). Both are empty when the four files are there."""
    if not Path(folder).is_dir():
        return [], list(FILES.values())
    wrong, missing = [], []
    for stem in FILES.values():
        path, why = _find_file(folder, stem)
        if path is None:
            (wrong if why else missing).append(why or stem)
    return wrong, missing


def _problems_text(wrong, missing):
    """``_folder_problems``'s answer as text: "X is a directory, not a file; missing Y, Z"."""
    return "; ".join(wrong + ([f"missing {', '.join(missing)}"] if missing else []))


def load_idx_dir(path, name=None):
    """A :class:`Split` from a folder holding the four standard IDX files, each raw or ``.gz``:
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``.

    Images are flattened to ``(n, pixels)``, C-contiguous, in the file's dtype (uint8 for MNIST);
    labels become int64. Checked: all four files are there (the error names the missing ones), each
    is a valid IDX file, labels are 1-D non-negative integers, one per image, and train and test
    images have the same size. ``name`` defaults to the folder's name.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder}: no such folder")
    wrong, missing = _folder_problems(folder)
    if wrong or missing:
        present = sorted(p.name for p in folder.iterdir() if "idx" in p.name and p.is_file())
        raw_or_gz = " (each raw or .gz)" if missing else ""
        raise DataNotFoundError(f"{folder}: {_problems_text(wrong, missing)}{raw_or_gz}; "
                                f"found {', '.join(present) or 'no IDX files'}")
    paths = {key: _find_file(folder, stem)[0] for key, stem in FILES.items()}
    arrays = {key: read_idx(p) for key, p in paths.items()}
    for part in ("train", "test"):
        X, y = arrays[f"X_{part}"], arrays[f"y_{part}"]
        X_path, y_path = paths[f"X_{part}"], paths[f"y_{part}"]
        if X.ndim < 2:
            raise DataError(f"{X_path}: expected images of shape (n, ...), got shape {X.shape}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{y_path}: expected 1-D integer labels, got {y.dtype} of shape {y.shape}")
        if len(y) != len(X):
            raise DataError(f"{y_path}: {len(y)} labels, but {X_path.name} has {len(X)} images")
        if len(y) and y.min() < 0:
            raise DataError(f"{y_path}: labels must be non-negative class numbers, found {y.min()}")
    if arrays["X_train"].shape[1:] != arrays["X_test"].shape[1:]:
        size = lambda X: "x".join(map(str, X.shape[1:]))  # noqa: E731
        raise DataError(f"{folder}: train images are {size(arrays['X_train'])}, "
                        f"test images {size(arrays['X_test'])}")
    flat = lambda X: np.ascontiguousarray(X.reshape(len(X), -1))  # noqa: E731
    return Split(flat(arrays["X_train"]), arrays["y_train"].astype(np.int64),
                 flat(arrays["X_test"]), arrays["y_test"].astype(np.int64), name or folder.name)


# --- MNIST and Fashion-MNIST: where to find them, how to fetch them -----------------------------
class Source(NamedTuple):
    """What fastbp knows about a downloadable dataset."""

    title: str                 # for messages
    mirrors: tuple             # base URLs, tried in turn; each + file name is a file's URL
    md5: dict                  # the published MD5 of each .gz file
    system_dirs: tuple = ()    # where a system package installs the files


DATASETS = {
    "mnist": Source(
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion-mnist": Source(
        "Fashion-MNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        ("/usr/share/datasets/fashion-mnist",)),  # Debian's dataset-fashion-mnist: the four .gz files
}
TIMEOUT = 5.0  # seconds a mirror gets to connect (and between blocks of data) before it is given up
DEADLINE = 120.0  # seconds a mirror gets for a whole file (from connecting to the last byte)
BLOCK = 1 << 16  # bytes asked for per read; a read returns what has arrived, up to this many


def cache_dir(name):
    """The cache folder for dataset ``name``: ``$XDG_CACHE_HOME/fastbp/<name>``, by default
    ``~/.cache/fastbp/<name>``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastbp" / name


def _candidates(name, data_dir=None):
    """The folders to look in for dataset ``name``, in order (see the module's docstring)."""
    folders = []
    if data_dir is not None:
        folders += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("FASTBP_DATA"):
        folders += [Path(os.environ["FASTBP_DATA"]) / name, Path(os.environ["FASTBP_DATA"])]
    folders += [Path(p) for p in DATASETS[name].system_dirs]
    return folders + [cache_dir(name)]


def find_dataset(name, data_dir=None):
    """The first folder holding all four IDX files of ``name`` ("mnist" or "fashion-mnist"),
    searched as the module's docstring says; None when there is none. Downloads nothing and
    reads only file names."""
    return next((folder for folder in _candidates(name, data_dir) if not any(_folder_problems(folder))), None)


def find_mnist(data_dir=None):
    """The folder holding MNIST's four IDX files, or None; downloads nothing."""
    return find_dataset("mnist", data_dir)


def find_fashion_mnist(data_dir=None):
    """The folder holding Fashion-MNIST's four IDX files, or None; downloads nothing."""
    return find_dataset("fashion-mnist", data_dir)


def mnist_available(data_dir=None):
    """Whether MNIST can be loaded without downloading."""
    return find_mnist(data_dir) is not None


def _offline_hint(name):
    files = ", ".join(DATASETS[name].md5)
    return (f"to use it offline, put the four files ({files}; raw or .gz) in a folder and pass "
            f"data_dir=FOLDER (fastbp train --data-dir FOLDER), set FASTBP_DATA=FOLDER, or copy them "
            f"into {cache_dir(name)}")


class DownloadTooSlow(TimeoutError):
    """A file's download went past its deadline (``DEADLINE`` seconds per file)."""


def _check_deadline(deadline):
    deadline = DEADLINE if deadline is None else deadline
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not deadline > 0:
        raise ValueError(f"deadline: expected a number of seconds > 0, got {deadline!r}")
    return float(deadline)


def _fetch(url, dest, md5, deadline=None):
    """Download ``url`` to ``dest``, checking its MD5 before it is renamed into place. The whole
    download gets ``deadline`` seconds (default ``DEADLINE``), from connecting to the last byte:
    past it, :class:`DownloadTooSlow` (a TimeoutError), and no file is left behind. A read that
    gets no data waits at most ``TIMEOUT`` seconds, so the deadline is exceeded by at most that.
    A connection that closes before the promised Content-Length is a ConnectionError (the next
    mirror is tried), not a checksum mismatch."""
    deadline = _check_deadline(deadline)
    start = time.monotonic()
    digest, size = hashlib.md5(), 0

    def check_time(total):
        elapsed = time.monotonic() - start
        if elapsed > deadline:
            of = f" of {total:,}" if total else ""
            raise DownloadTooSlow(f"too slow: {size:,}{of} bytes of {dest.name} in {elapsed:.1f} s, over "
                                  f"the {deadline:g} s limit per file (fastbp.datasets.DEADLINE)")

    with urllib.request.urlopen(url, timeout=min(TIMEOUT, deadline)) as response:
        try:
            total = int(response.headers.get("Content-Length") or 0)
        except (AttributeError, TypeError, ValueError):  # no headers, or a malformed length
            total = 0
        check_time(total)
        print(f"fastbp: downloading {url}", file=sys.stderr)
        dest.parent.mkdir(parents=True, exist_ok=True)
        read = getattr(response, "read1", response.read)  # read1: what has arrived, without waiting for more
        with atomic_write(dest) as f:  # a failure removes the temporary file: nothing half-written
            for block in iter(lambda: read(BLOCK), b""):
                digest.update(block)
                f.write(block)
                size += len(block)
                check_time(total)
            if total and size < total:  # the server hung up early: another mirror may do better
                raise ConnectionError(f"incomplete: the connection closed after {size:,} of {total:,} "
                                      f"bytes of {dest.name}")
            if digest.hexdigest() != md5:
                raise DataError(f"{url}: checksum mismatch for {dest.name}: expected MD5 {md5}, got "
                                f"{digest.hexdigest()}; the download was deleted")


def _try_mirrors(name, folder, deadline=None):
    """Fetch the files of ``name`` missing from ``folder``, each from the first mirror that serves
    it in time; returns the mirrors that failed as ``(mirror, error)`` pairs, empty when all files
    are there. A failing mirror is named on stderr when there is another to try. A checksum
    mismatch raises DataError at once."""
    deadline = _check_deadline(deadline)
    failures = []
    mirrors = DATASETS[name].mirrors
    for i, mirror in enumerate(mirrors):
        try:
            for filename, md5 in DATASETS[name].md5.items():
                if not (folder / filename).is_file():
                    _fetch(mirror + filename, folder / filename, md5, deadline=deadline)
            return []
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, refused, reset, too slow
            failures.append((mirror, e))
            if i + 1 < len(mirrors):
                print(f"fastbp: {mirror} failed ({_reason(e)}); trying the next mirror", file=sys.stderr)
    return failures


def _reason(error):
    return getattr(error, "reason", None) or error


def _tried(failures):
    """The failed mirrors as text, and the headline's reason."""
    slow = any(isinstance(e, DownloadTooSlow) for _, e in failures)
    why = "was reachable and fast enough" if slow else "could be reached"
    return "; ".join(f"{mirror} ({_reason(e)})" for mirror, e in failures), why


def download_dataset(name, folder=None, deadline=None):
    """Download the four ``.gz`` files of ``name`` ("mnist" or "fashion-mnist") into ``folder``
    (default: its cache folder) and return the folder.

    Files already there are kept; each missing one is fetched from the first mirror that serves
    it (each gets ``TIMEOUT`` seconds to answer, and ``deadline`` seconds, default ``DEADLINE``,
    for the whole file; a mirror that is slower is left for the next), its MD5 checked, and only
    then renamed into place. A checksum mismatch raises :class:`DataError` at once (the bad file
    is deleted); when no mirror delivers, :class:`DataNotFoundError` names those tried, why each
    failed, and how to work offline.
    """
    folder = Path(folder) if folder is not None else cache_dir(name)
    failures = _try_mirrors(name, folder, deadline)
    if failures:
        tried, why = _tried(failures)
        raise DataNotFoundError(f"could not download {DATASETS[name].title}: no mirror {why}\n"
                                f"  tried: {tried}\n  {_offline_hint(name)}")
    return folder


def _describe(folder):
    """A folder's name, with what is wrong when it holds some of the files (or something in
    place of one: "X is a directory, not a file")."""
    wrong, missing = _folder_problems(folder)
    if not wrong and len(missing) == len(FILES):
        return str(folder)
    return f"{folder} ({_problems_text(wrong, missing)})"


def _load_named(name, data_dir, download):
    folder = find_dataset(name, data_dir)
    if folder is not None:
        return load_idx_dir(folder, name=name)
    failures = _try_mirrors(name, cache_dir(name)) if download else []
    if download and not failures:
        return load_idx_dir(cache_dir(name), name=name)
    tried, why = _tried(failures)
    reason = f"no download mirror {why}" if download else "downloading is off"
    tried = f"  tried: {tried}\n" if failures else ""
    raise DataNotFoundError(f"{DATASETS[name].title} not found locally, and {reason}\n"
                            f"  looked in: {', '.join(map(_describe, _candidates(name, data_dir)))}\n"
                            f"{tried}  {_offline_hint(name)}")


def load_mnist(data_dir=None, download=True):
    """MNIST, 60,000 training and 10,000 test handwritten digits, as a :class:`Split` named "mnist".

    Looks in ``data_dir``, ``$FASTBP_DATA`` and the cache, then downloads (when ``download``) from
    public mirrors into the cache, MD5-checked; see the module's docstring for the details and for
    which files are checksummed. Raises :class:`DataNotFoundError` when it is not there and cannot
    be downloaded, :class:`DataError` when a file is bad.
    """
    return _load_named("mnist", data_dir, download)


def load_fashion_mnist(data_dir=None, download=True):
    """Fashion-MNIST, 60,000 + 10,000 28x28 images of clothing in MNIST's format, as a
    :class:`Split` named "fashion-mnist".

    Searched like :func:`load_mnist`, and also in Debian's ``/usr/share/datasets/fashion-mnist``
    (``apt-get install dataset-fashion-mnist``), before the cache.
    """
    return _load_named("fashion-mnist", data_dir, download)


# --- small offline data sets --------------------------------------------------------------------
def load_digits(n_train=1500):
    """scikit-learn's bundled 8x8 digits, 1,797 images, as a :class:`Split` named "digits".

    Pixels (0..16) are scaled to uint8 0..255 (x 255/16, rounded) like every other dataset here;
    images are (n, 64). The split is fixed: the first ``n_train`` (1,500) images train, the
    remaining 297 test.

    The images are read from scikit-learn's own file (``sklearn/datasets/data/digits.csv.gz``:
    64 pixels and the label per line) without importing scikit-learn, whose ``sklearn.datasets``
    takes 1.5-2 s to import against 30 ms for the file (``fastbp train --dataset digits``, a
    new user's first run, paid it every time); through scikit-learn's loader when the file is not
    where this version of scikit-learn keeps it, or not as expected.
    """
    data = _bundled_digits()
    if data is None:
        from sklearn.datasets import load_digits as sklearn_digits

        digits = sklearn_digits()
        data = np.column_stack([digits.data, digits.target])
    X = np.rint(data[:, :64] * (255 / 16)).astype(np.uint8)
    y = data[:, 64].astype(np.int64)
    return Split(X[:n_train], y[:n_train], X[n_train:], y[n_train:], "digits")


def _bundled_digits(path=None):
    """scikit-learn's digits file (or ``path``) as an array of 1,797 rows of 64 pixels (0..16)
    and the label, or None when scikit-learn is not installed or the file is not there or not as
    expected."""
    import importlib.util

    if path is None:
        spec = importlib.util.find_spec("sklearn")  # (finds the package without importing it)
        if spec is None or spec.origin is None:
            return None
        path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")
    try:
        with warnings.catch_warnings():  # (an empty file is a warning to loadtxt: here, not the file)
            warnings.simplefilter("ignore")
            data = np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError, EOFError, zlib.error):
        return None
    ok = (data.shape == (1797, 65) and np.array_equal(data, np.rint(data)) and data[:, :64].min() >= 0
          and data[:, :64].max() <= 16 and set(np.unique(data[:, 64])) <= set(range(10)))
    return data if ok else None


def make_moons(n_samples=2000, noise=0.2, random_state=0, test_fraction=0.3):
    """scikit-learn's two interleaving half circles as a :class:`Split` named "moons": float64
    features (n, 2), int64 labels 0/1, split with ``train_test_split(random_state=42)``."""
    from sklearn.datasets import make_moons as sklearn_moons
    from sklearn.model_selection import train_test_split

    X, y = sklearn_moons(n_samples=n_samples, noise=noise, random_state=random_state)
    X_train, X_test, y_train, y_test = train_test_split(X, y.astype(np.int64), test_size=test_fraction,
                                                        random_state=42)
    return Split(X_train, y_train, X_test, y_test, "moons")


NAMES = ("mnist", "fashion-mnist", "digits", "moons")


def load_dataset(name_or_path, data_dir=None, download=True):
    """A :class:`Split` by name ("mnist", "fashion-mnist", "digits", "moons") or from a folder of
    the four IDX files (see :func:`load_idx_dir`). A name wins over a folder of the same name:
    write ``./mnist`` for the folder. ``data_dir`` and ``download`` apply to MNIST and
    Fashion-MNIST."""
    if name_or_path == "mnist":
        return load_mnist(data_dir=data_dir, download=download)
    if name_or_path == "fashion-mnist":
        return load_fashion_mnist(data_dir=data_dir, download=download)
    if name_or_path == "digits":
        return load_digits()
    if name_or_path == "moons":
        return make_moons()
    if os.path.isdir(name_or_path):
        return load_idx_dir(name_or_path)
    raise ValueError(f"unknown dataset {os.fspath(name_or_path)!r}: expected one of {', '.join(NAMES)}, "
                     f"or a folder of IDX files")
