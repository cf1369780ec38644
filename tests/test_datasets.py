"""fastbp.datasets on small files made here: no network, no MNIST needed."""
import contextlib
import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest

from fastbp import datasets
from fastbp.datasets import DataError, DataNotFoundError

DEBIAN_DIRS = datasets.DATASETS["fashion-mnist"].system_dirs  # before the fixture below replaces it
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# --- helpers that make fixture files -----------------------------------------------------------
def idx_bytes(array, type_code=0x08):
    """Hand-made IDX bytes, independent of write_idx: magic, big-endian dims, big-endian data."""
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array, dtype=big).tobytes()


def make_idx_dir(folder, n_train=12, n_test=5, gz=True, seed=0, skip=()):
    """A folder with the four standard files of tiny fake MNIST (28x28 uint8 images, labels 0..9)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8)}
    for stem, array in arrays.items():
        if stem not in skip:
            data = idx_bytes(array)
            (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Every test: a private cache, no $FASTBP_DATA, no system folder, and no real network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    for name in ("mnist", "fashion-mnist"):
        monkeypatch.setitem(datasets.DATASETS, name, datasets.DATASETS[name]._replace(
            system_dirs=(str(tmp_path / "system" / name),)))
    real_urlopen = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        assert str(url).startswith(("file:", "http://127.0.0.1:")), f"a test tried the network: {url}"
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A fake MNIST mirror: a file:// folder of four .gz files, with the checksums patched to match."""
    folder = tmp_path / "mirror"
    arrays = make_idx_dir(folder)
    source = datasets.DATASETS["mnist"]._replace(
        mirrors=(folder.as_uri() + "/",), md5={s + ".gz": md5(folder / (s + ".gz")) for s in STEMS})
    monkeypatch.setitem(datasets.DATASETS, "mnist", source)
    return arrays


@pytest.fixture
def fetches(monkeypatch):
    """The URLs that _fetch was asked for."""
    calls, real_fetch = [], datasets._fetch

    def counting(url, dest, md5, *args, **kwargs):
        calls.append(url)
        return real_fetch(url, dest, md5, *args, **kwargs)

    monkeypatch.setattr(datasets, "_fetch", counting)
    return calls


# --- IDX reading and writing ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    array = (rng.integers(info.min, info.max, (3, 4, 5), endpoint=True) if info
             else rng.standard_normal((3, 4, 5))).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    datasets.write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = datasets.read_idx(path)
    assert back.dtype == dtype and back.dtype.isnative and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_write_idx_matches_the_format_and_accepts_big_endian_input(tmp_path):
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    datasets.write_idx(tmp_path / "a", array)
    assert (tmp_path / "a").read_bytes() == idx_bytes(array, 0x0C)
    assert datasets.read_idx(tmp_path / "a").dtype == np.dtype("=i4")


def test_write_idx_rejects_what_idx_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="cannot store dtype int64"):
        datasets.write_idx(tmp_path / "a", np.arange(3, dtype=np.int64))
    with pytest.raises(TypeError, match="cannot store dtype bool"):
        datasets.write_idx(tmp_path / "a", np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="dimensions"):
        datasets.write_idx(tmp_path / "a", np.uint8(3))
    assert list(tmp_path.iterdir()) == []


def test_gzip_is_detected_by_magic_not_by_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    (tmp_path / "compressed-without-suffix").write_bytes(gzip.compress(idx_bytes(array)))
    (tmp_path / "raw-with-suffix.gz").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "compressed-without-suffix"), array)
    np.testing.assert_array_equal(datasets.read_idx(str(tmp_path / "raw-with-suffix.gz")), array)


def test_write_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    old = np.arange(4, dtype=np.uint8)
    datasets.write_idx(tmp_path / "keep.gz", old)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.os, "fsync", disk_full)
    for name in ("new", "new.gz", "keep.gz"):
        with pytest.raises(OSError, match="No space"):
            datasets.write_idx(tmp_path / name, np.zeros((50, 50), np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.gz"]  # no partial file, no temporary file
    monkeypatch.undo()
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "keep.gz"), old)  # the old file is intact


# --- bad files -------------------------------------------------------------------------------
GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize("data,message", [
    (b"\x00\x01" + GOOD[2:], "bad magic number 0x00010803"),
    (b"\x12\x34\x56\x78" + GOOD[4:], "bad magic number 0x12345678"),
    (b"\x00\x00\x0a\x03" + GOOD[4:], "bad magic number 0x00000A03: unknown data type code 0x0A"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00", "too short for an IDX header"),
    (GOOD[:10], "truncated header: 3 dimensions need 16 bytes, file has 10"),
    (GOOD[:-4], "truncated: header promises 2x3x4 uint8 = 24 bytes of data, file has 20"),
    (GOOD + b"\x00\x00", "2 trailing bytes: header promises 2x3x4 uint8 = 24 bytes of data, file has 26"),
    (idx_bytes(np.zeros(3), 0x0E)[:-1], "header promises 3 float64 = 24 bytes of data, file has 23"),
])
def test_bad_idx_files_say_what_is_wrong(tmp_path, data, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=message) as raised:
        datasets.read_idx(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert isinstance(raised.value, ValueError)


def test_truncated_data_inside_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(GOOD[:-1]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: truncated: .* file has 23 \(after decompression\)"):
        datasets.read_idx(path)


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_corrupt_gzip(tmp_path, damage):
    packed = gzip.compress(GOOD * 50)
    if damage == "cut":
        packed = packed[:len(packed) // 2]
    else:
        packed = packed[:20] + bytes(b ^ 0xFF for b in packed[20:40]) + packed[40:]
    path = tmp_path / "x.gz"
    path.write_bytes(packed)
    with pytest.raises(DataError, match=f"{path}: corrupt gzip data"):
        datasets.read_idx(path)


def test_gz_name_without_gzip_content_says_so(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(DataError, match="bad magic number .* not gzip-compressed"):
        datasets.read_idx(path)


# --- IDX folders -----------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_dir(tmp_path, gz):
    arrays = make_idx_dir(tmp_path / "set", gz=gz)
    split = datasets.load_idx_dir(tmp_path / "set")
    X, y, Xt, yt = split[:4]
    assert X.shape == (12, 784) and Xt.shape == (5, 784) and X.dtype == np.uint8 and X.flags.c_contiguous
    assert y.dtype == yt.dtype == np.int64 and split.name == "set"
    np.testing.assert_array_equal(X, arrays["train-images-idx3-ubyte"].reshape(12, 784))
    np.testing.assert_array_equal(yt, arrays["t10k-labels-idx1-ubyte"])
    assert datasets.load_idx_dir(tmp_path / "set", name="mine").name == "mine"


def test_load_idx_dir_names_missing_files(tmp_path):
    make_idx_dir(tmp_path, skip=("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))
    with pytest.raises(DataNotFoundError) as raised:
        datasets.load_idx_dir(tmp_path)
    message = str(raised.value)
    assert "missing train-images-idx3-ubyte, train-labels-idx1-ubyte" in message
    assert "found t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in message
    with pytest.raises(DataNotFoundError, match="no such folder"):
        datasets.load_idx_dir(tmp_path / "nowhere")


@pytest.mark.parametrize("stem", STEMS)
def test_a_folder_in_place_of_an_idx_file_is_called_a_folder(tmp_path, stem):
    make_idx_dir(tmp_path / "set", skip=(stem,))
    (tmp_path / "set" / (stem + ".gz")).mkdir()
    with pytest.raises(DataNotFoundError) as raised:
        datasets.load_idx_dir(tmp_path / "set")
    message = str(raised.value)
    assert f"{stem}.gz is a directory, not a file" in message
    assert "missing" not in message  # it is there, as the wrong kind of thing
    found = message.split("found ")[1]
    assert f"{stem}.gz" not in found and found.count("-ubyte.gz") == 3
    # where the loaders look: the folder does not count as holding the dataset, and the error says why
    assert datasets.find_mnist(tmp_path / "set") is None
    with pytest.raises(DataNotFoundError, match=rf"set \({stem}\.gz is a directory, not a file\)"):
        datasets.load_mnist(data_dir=tmp_path / "set", download=False)


def test_a_folder_and_a_missing_file_are_both_named(tmp_path):
    make_idx_dir(tmp_path, skip=("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    (tmp_path / "train-images-idx3-ubyte").mkdir()
    with pytest.raises(DataNotFoundError) as raised:
        datasets.load_idx_dir(tmp_path)
    assert (f"{tmp_path}: train-images-idx3-ubyte is a directory, not a file; missing "
            f"t10k-labels-idx1-ubyte (each raw or .gz); found t10k-images-idx3-ubyte.gz, "
            f"train-labels-idx1-ubyte.gz") == str(raised.value)


def test_a_real_file_next_to_a_folder_of_the_other_spelling_is_used(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").mkdir()  # the .gz file is there: it is read
    assert datasets.load_idx_dir(tmp_path).X_train.shape == (12, 784)


def test_load_idx_dir_count_mismatch(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: 4 labels, but t10k-images-idx3-ubyte.gz has 5 images"):
        datasets.load_idx_dir(tmp_path)


@pytest.mark.parametrize("labels,message", [
    (np.zeros(5, np.float32), "expected 1-D integer labels, got float32"),
    (np.zeros((5, 1), np.uint8), r"expected 1-D integer labels, got uint8 of shape \(5, 1\)"),
    (np.array([0, 1, -1, 2, 3], np.int8), "labels must be non-negative class numbers, found -1"),
])
def test_load_idx_dir_bad_labels(tmp_path, labels, message):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, {
        np.dtype(np.float32): 0x0D, np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}[labels.dtype])))
    with pytest.raises(DataError, match=message):
        datasets.load_idx_dir(tmp_path)


def test_load_idx_dir_image_sizes_must_agree(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((5, 8, 8), np.uint8))))
    with pytest.raises(DataError, match="train images are 28x28, test images 8x8"):
        datasets.load_idx_dir(tmp_path)


def test_shared_mnist_test_pair_is_readable_but_not_a_full_folder():
    folder = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
    if not os.path.isfile(os.path.join(folder, "t10k-labels-idx1-ubyte.gz")):
        pytest.skip("shared MNIST test split not present")
    labels = datasets.read_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
    assert labels.shape == (10000,) and labels.dtype == np.uint8 and labels.max() == 9
    with pytest.raises(DataNotFoundError, match="missing train-images-idx3-ubyte, train-labels-idx1-ubyte"):
        datasets.load_idx_dir(folder)


# --- finding and downloading MNIST -------------------------------------------------------------
def test_download_lands_in_cache_and_is_used_next_time(tmp_path, mirror, fetches):
    split = datasets.load_mnist()
    cache = tmp_path / "cache" / "fastbp" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(s + ".gz" for s in STEMS)  # no temp files
    assert len(fetches) == 4 and split.name == "mnist"
    np.testing.assert_array_equal(split.X_train, mirror["train-images-idx3-ubyte"].reshape(12, 784))
    np.testing.assert_array_equal(split.y_test, mirror["t10k-labels-idx1-ubyte"])
    assert datasets.find_mnist() == cache and datasets.mnist_available()

    again = datasets.load_mnist()
    assert len(fetches) == 4  # nothing downloaded the second time
    np.testing.assert_array_equal(again.X_test, split.X_test)


def test_download_tries_the_next_mirror_and_keeps_files_already_there(tmp_path, mirror, fetches, monkeypatch):
    source = datasets.DATASETS["mnist"]
    monkeypatch.setitem(datasets.DATASETS, "mnist", source._replace(
        mirrors=((tmp_path / "empty-mirror").as_uri() + "/",) + source.mirrors))
    cache = datasets.cache_dir("mnist")
    cache.mkdir(parents=True)
    (cache / "train-images-idx3-ubyte.gz").write_bytes((tmp_path / "mirror" / "train-images-idx3-ubyte.gz").read_bytes())
    datasets.load_mnist()
    assert [url.rsplit("/", 2)[-2] for url in fetches] == ["empty-mirror", "mirror", "mirror", "mirror"]
    assert "train-images" not in " ".join(fetches[1:])


def test_checksum_mismatch_leaves_nothing_in_cache(tmp_path, mirror, monkeypatch):
    source = datasets.DATASETS["mnist"]
    good = source.md5["train-images-idx3-ubyte.gz"]
    monkeypatch.setitem(datasets.DATASETS, "mnist", source._replace(
        md5={**source.md5, "train-images-idx3-ubyte.gz": "0" * 32}))
    with pytest.raises(DataError) as raised:
        datasets.load_mnist()
    message = str(raised.value)
    assert "checksum mismatch for train-images-idx3-ubyte.gz" in message
    assert f"expected MD5 {'0' * 32}, got {good}" in message
    assert not isinstance(raised.value, DataNotFoundError)
    cache = tmp_path / "cache" / "fastbp" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []  # neither the file nor a temporary one
    assert not datasets.mnist_available()


@pytest.mark.parametrize("error", [urllib.error.URLError(socket.timeout("timed out")),
                                   urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")),
                                   socket.timeout("timed out")])
def test_unreachable_mirrors_give_up_quickly_and_explain_offline_use(tmp_path, monkeypatch, error):
    timeouts = []

    def unreachable(url, timeout=None):
        timeouts.append(timeout)
        raise error

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as raised:
        datasets.load_mnist(data_dir=tmp_path / "nothing-here")
    assert time.perf_counter() - start < 1
    assert timeouts and all(t is not None and t <= 10 for t in timeouts)  # a short timeout is asked for
    assert len(timeouts) == len(datasets.DATASETS["mnist"].mirrors)  # one attempt per mirror, then it stops
    message = str(raised.value)
    assert message.splitlines()[0] == "MNIST not found locally, and no download mirror could be reached"
    for url in datasets.DATASETS["mnist"].mirrors:
        assert url in message
    assert "timed out" in message or "refused" in message
    assert "offline" in message and str(tmp_path / "nothing-here") in message
    assert not (tmp_path / "cache").exists()


def test_download_dataset_reports_unreachable_mirrors(monkeypatch):
    def unreachable(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(DataNotFoundError, match="could not download Fashion-MNIST: no mirror could be reached"):
        datasets.download_dataset("fashion-mnist")


@contextlib.contextmanager
def local_http_mirror(delay):
    """A mirror on 127.0.0.1 that promises 100,000 bytes per file, sends 300 of them, one every
    ``delay`` seconds, then closes the connection (or stops when the test ends): bounded in time,
    it never hangs a download. Yields (base URL, the paths asked for)."""
    stop, requests = threading.Event(), []

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(300):
                    if delay and stop.wait(delay):
                        break
                    self.wfile.write(b"\x1f")
                    self.wfile.flush()
            except OSError:  # the client hung up: what a deadline does
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mnist/", requests
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def trickling_mirror():
    """One byte every 10 ms (300 bytes: about 3 s)."""
    with local_http_mirror(0.01) as served:
        yield served


@pytest.fixture
def short_mirror():
    """300 of the 100,000 promised bytes at once, then the connection closes."""
    with local_http_mirror(0) as served:
        yield served


def test_a_trickling_mirror_is_given_up_at_the_deadline_and_the_next_one_used(
        tmp_path, mirror, trickling_mirror, monkeypatch, capsys):
    slow, requests = trickling_mirror
    source = datasets.DATASETS["mnist"]
    monkeypatch.setitem(datasets.DATASETS, "mnist", source._replace(mirrors=(slow,) + source.mirrors))
    monkeypatch.setattr(datasets, "DEADLINE", 0.3)
    split = datasets.load_mnist()
    np.testing.assert_array_equal(split.y_test, mirror["t10k-labels-idx1-ubyte"])
    assert requests == ["/mnist/train-images-idx3-ubyte.gz"]  # the slow mirror is asked once, then left
    err = capsys.readouterr().err
    assert f"fastbp: {slow} failed (too slow: " in err and "trying the next mirror" in err
    assert "over the 0.3 s limit per file" in err
    cache = tmp_path / "cache" / "fastbp" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(s + ".gz" for s in STEMS)  # no partial file


def test_download_deadline_parameter_and_the_error_names_the_slow_mirror(tmp_path, trickling_mirror, monkeypatch):
    slow, requests = trickling_mirror
    monkeypatch.setitem(datasets.DATASETS, "mnist", datasets.DATASETS["mnist"]._replace(mirrors=(slow,)))
    folder = tmp_path / "download"
    with pytest.raises(DataNotFoundError) as raised:
        datasets.download_dataset("mnist", folder, deadline=0.2)
    message = str(raised.value)
    assert message.splitlines()[0] == "could not download MNIST: no mirror was reachable and fast enough"
    assert f"tried: {slow} (too slow: " in message and "train-images-idx3-ubyte.gz" in message
    assert "over the 0.2 s limit per file" in message and "offline" in message
    assert requests == ["/mnist/train-images-idx3-ubyte.gz"]
    assert not folder.exists() or list(folder.iterdir()) == []  # neither a partial file nor a temporary one
    with pytest.raises(ValueError, match="deadline: expected a number of seconds > 0, got 0"):
        datasets.download_dataset("mnist", folder, deadline=0)


def test_a_mirror_that_closes_early_is_an_incomplete_download_and_the_next_one_is_used(
        tmp_path, mirror, short_mirror, monkeypatch, capsys):
    short, requests = short_mirror
    source = datasets.DATASETS["mnist"]
    monkeypatch.setitem(datasets.DATASETS, "mnist", source._replace(mirrors=(short,) + source.mirrors))
    split = datasets.load_mnist()  # not a checksum error: the download was cut short, not wrong
    np.testing.assert_array_equal(split.y_train, mirror["train-labels-idx1-ubyte"])
    assert requests == ["/mnist/train-images-idx3-ubyte.gz"]
    err = capsys.readouterr().err
    assert (f"fastbp: {short} failed (incomplete: the connection closed after 300 of 100,000 bytes "
            f"of train-images-idx3-ubyte.gz); trying the next mirror") in err
    cache = tmp_path / "cache" / "fastbp" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(s + ".gz" for s in STEMS)


def test_no_download_means_no_download(tmp_path, mirror, fetches):
    with pytest.raises(DataNotFoundError, match="MNIST not found locally, and downloading is off") as raised:
        datasets.load_mnist(download=False)
    assert fetches == [] and "offline" in str(raised.value)


def test_partial_folder_is_named_in_the_error(tmp_path):
    make_idx_dir(tmp_path / "half", skip=("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))
    with pytest.raises(DataNotFoundError, match=r"half \(missing train-images-idx3-ubyte, train-labels-idx1-ubyte\)"):
        datasets.load_mnist(data_dir=tmp_path / "half", download=False)


def test_search_order_data_dir_then_fastbp_data_then_cache(tmp_path, monkeypatch, fetches):
    make_idx_dir(tmp_path / "cache" / "fastbp" / "mnist", n_train=3)
    assert datasets.load_mnist().X_train.shape[0] == 3
    make_idx_dir(tmp_path / "env", n_train=4)                       # $FASTBP_DATA holding the files
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "env"))
    assert datasets.load_mnist().X_train.shape[0] == 4
    make_idx_dir(tmp_path / "env" / "mnist", n_train=5)             # ... its mnist subfolder comes first
    assert datasets.load_mnist().X_train.shape[0] == 5
    assert datasets.find_mnist() == tmp_path / "env" / "mnist"
    make_idx_dir(tmp_path / "mine", n_train=6)                      # data_dir comes before all
    assert datasets.load_mnist(data_dir=tmp_path / "mine").X_train.shape[0] == 6
    assert datasets.load_dataset("mnist", data_dir=str(tmp_path / "mine")).X_train.shape[0] == 6
    assert fetches == []


def test_fashion_mnist_search_order(tmp_path, monkeypatch, fetches):
    system = tmp_path / "system" / "fashion-mnist"                  # stands in for Debian's folder
    make_idx_dir(tmp_path / "cache" / "fastbp" / "fashion-mnist", n_train=3)
    assert datasets.load_fashion_mnist().X_train.shape[0] == 3
    make_idx_dir(system, n_train=4)
    split = datasets.load_fashion_mnist()
    assert split.X_train.shape[0] == 4 and split.name == "fashion-mnist"
    make_idx_dir(tmp_path / "env" / "fashion-mnist", n_train=5)
    make_idx_dir(tmp_path / "env" / "mnist", n_train=7)
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "env"))
    assert datasets.load_fashion_mnist().X_train.shape[0] == 5
    assert datasets.load_mnist().X_train.shape[0] == 7
    assert datasets.find_fashion_mnist() == tmp_path / "env" / "fashion-mnist"
    assert fetches == []


def test_debian_fashion_mnist_is_searched_before_the_cache(tmp_path, monkeypatch):
    assert DEBIAN_DIRS == ("/usr/share/datasets/fashion-mnist",)
    assert datasets.DATASETS["mnist"].system_dirs != DEBIAN_DIRS
    debian = DEBIAN_DIRS[0]
    if not os.path.isfile(os.path.join(debian, "t10k-labels-idx1-ubyte.gz")):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist",
                        datasets.DATASETS["fashion-mnist"]._replace(system_dirs=DEBIAN_DIRS))
    make_idx_dir(tmp_path / "cache" / "fastbp" / "fashion-mnist")
    assert str(datasets.find_fashion_mnist()) == debian
    labels = datasets.read_idx(os.path.join(debian, "t10k-labels-idx1-ubyte.gz"))
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10


def test_cache_dir_respects_xdg_cache_home(tmp_path, monkeypatch):
    assert datasets.cache_dir("mnist") == tmp_path / "cache" / "fastbp" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.cache_dir("fashion-mnist") == tmp_path / "home" / ".cache" / "fastbp" / "fashion-mnist"


# --- small offline sets and dispatch -------------------------------------------------------------
def test_load_digits():
    split = datasets.load_digits()
    X, y, Xt, yt, name = split
    assert name == "digits" and X.shape == (1500, 64) and Xt.shape == (297, 64)
    assert X.dtype == Xt.dtype == np.uint8 and y.dtype == yt.dtype == np.int64
    assert X.min() == 0 and X.max() == 255 and set(np.unique(y)) == set(range(10))
    from sklearn.datasets import load_digits

    raw = load_digits()
    np.testing.assert_array_equal(np.concatenate([X, Xt]), np.rint(raw.data * 255 / 16))
    np.testing.assert_array_equal(np.concatenate([y, yt]), raw.target)


def test_load_digits_reads_scikit_learns_file_without_importing_it_and_falls_back_to_its_loader(tmp_path, monkeypatch):
    """The file is read without importing scikit-learn's datasets (1.5-2 s); a file that is
    missing or not as expected is refused, and then scikit-learn's loader gives the same split."""
    import subprocess
    import sys

    code = ("import sys, fastbp.datasets as d; s = d.load_digits(); "
            "print(s.X_train.shape, 'sklearn.datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(1500,", "64)", "False"]
    good = datasets._bundled_digits()
    assert good is not None and good.shape == (1797, 65)
    lines = [",".join(str(int(v)) for v in row) for row in good]
    cases = {"short.csv.gz": lines[:-1], "seventeen.csv.gz": ["17," + line.split(",", 1)[1] for line in lines],
             "label 10.csv.gz": [line.rsplit(",", 1)[0] + ",10" for line in lines],
             "text.csv.gz": ["a,b"] + lines[1:], "empty.csv.gz": [],
             "half a pixel.csv.gz": ["0.5," + lines[0].split(",", 1)[1]] + lines[1:],
             "negative.csv.gz": ["-1," + lines[0].split(",", 1)[1]] + lines[1:],
             "66 columns.csv.gz": [line + ",0" for line in lines]}
    for name, rows in cases.items():
        with gzip.open(tmp_path / name, "wt") as f:
            f.write("\n".join(rows) + ("\n" if rows else ""))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (and quietly: no warning of loadtxt's reaches the user)
            assert datasets._bundled_digits(str(tmp_path / name)) is None, name
    (tmp_path / "not gzip.csv.gz").write_bytes(b"\x1f\x8b garbage")
    for name in ("not gzip.csv.gz", "missing.csv.gz"):
        assert datasets._bundled_digits(str(tmp_path / name)) is None, name
    direct = datasets.load_digits()
    monkeypatch.setattr(datasets, "_bundled_digits", lambda path=None: None)
    fallback = datasets.load_digits()
    for a, b in zip(direct[:4], fallback[:4]):
        np.testing.assert_array_equal(a, b)


def test_make_moons():
    split = datasets.make_moons(n_samples=200, test_fraction=0.25)
    assert split.name == "moons" and split.X_train.shape == (150, 2) and split.X_test.shape == (50, 2)
    assert split.X_train.dtype == np.float64 and split.y_train.dtype == np.int64
    assert set(np.unique(split.y_train)) == {0, 1}
    np.testing.assert_array_equal(datasets.make_moons(n_samples=200, test_fraction=0.25).X_test, split.X_test)


def test_load_dataset_dispatch(tmp_path, monkeypatch):
    assert datasets.load_dataset("digits").name == "digits"
    assert datasets.load_dataset("moons").X_train.shape == (1400, 2)
    make_idx_dir(tmp_path / "folder")
    assert datasets.load_dataset(str(tmp_path / "folder")).X_train.shape == (12, 784)
    assert datasets.load_dataset(tmp_path / "folder").name == "folder"
    seen = []
    monkeypatch.setattr(datasets, "load_fashion_mnist", lambda **kw: seen.append(kw) or "fashion")
    assert datasets.load_dataset("fashion-mnist", data_dir="d", download=False) == "fashion"
    assert seen == [{"data_dir": "d", "download": False}]
    with pytest.raises(ValueError, match="unknown dataset 'cifar': expected one of mnist, fashion-mnist, digits, moons"):
        datasets.load_dataset("cifar")
