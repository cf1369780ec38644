"""IDX files, the dataset search and download logic (without any network), the offline sets."""
import gzip
import hashlib
import os
import urllib.error

import numpy as np
import pytest

from fastbp import datasets
from fastbp.datasets import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"a.idx{suffix}"
    datasets.write_idx(path, a)
    b = datasets.read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)
    assert os.listdir(tmp_path) == [path.name]


def test_gzip_is_detected_by_content(tmp_path):
    datasets.write_idx(tmp_path / "a.gz", np.arange(5, dtype=np.uint8))
    os.rename(tmp_path / "a.gz", tmp_path / "renamed-idx1-ubyte")
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "renamed-idx1-ubyte"), np.arange(5))


def write_raw(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("content,message", [
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", r"truncated: header promises 5 uint8 = 5 bytes of data, file has 3"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", r"1 trailing bytes"),
    (b"\x01\x02\x08\x01\x00\x00\x00\x01a", r"bad magic number 0x01020801"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01a", r"bad magic number 0x00000701"),
    (b"\x00\x00\x08\x03\x00\x00", r"truncated header: 3 dimensions need 16 bytes"),
    (b"\x00\x00", r"too short"),
    (b"\x1f\x8b\x08\x00garbage", r"corrupt gzip"),
])
def test_bad_idx_files_are_named_and_explained(tmp_path, content, message):
    path = write_raw(tmp_path / "bad-idx", content)
    with pytest.raises(DataError, match=message) as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


def test_write_idx_rejects_unsupported_dtype_and_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="dtype"):
        datasets.write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint16))

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(gzip, "compress", fail)
    with pytest.raises(OSError):
        datasets.write_idx(tmp_path / "x.gz", np.zeros(3, dtype=np.uint8))
    assert os.listdir(tmp_path) == []


def make_idx_dir(folder, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        datasets.write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        datasets.write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n).astype(np.uint8))
    return folder


def test_load_idx_dir(tmp_path):
    split = datasets.load_idx_dir(make_idx_dir(tmp_path / "d", gz=False))
    X, y, Xt, yt = split[:4]
    assert X.shape == (30, 784) and X.dtype == np.uint8 and X.flags.c_contiguous
    assert y.dtype == np.int64 and Xt.shape == (10, 784) and split.name == "d"


def test_load_idx_dir_names_missing_files_and_count_mismatch(tmp_path):
    folder = make_idx_dir(tmp_path / "d")
    os.remove(folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        datasets.load_idx_dir(folder)
    datasets.write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="9 labels for 10 images"):
        datasets.load_idx_dir(folder)


def test_the_shared_mnist_test_folder_is_rejected_clearly_when_incomplete(tmp_path):
    folder = make_idx_dir(tmp_path / "d")
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        os.remove(folder / f)
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte.*train-labels-idx1-ubyte"):
        datasets.load_idx_dir(folder)


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """MNIST served from a local folder through file:// URLs, with checksums of the fixture files."""
    mirror = make_idx_dir(tmp_path / "mirror")
    md5 = {f: hashlib.md5((mirror / f).read_bytes()).hexdigest() for f in os.listdir(mirror)}
    monkeypatch.setitem(datasets.SOURCES, "mnist", {"mirrors": [mirror.as_uri() + "/"], "md5": md5, "system": []})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    calls = []
    real = datasets.urllib.request.urlopen
    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or real(url, timeout=timeout))
    return mirror, md5, calls


def test_download_lands_in_cache_and_is_reused(fake_mirror, tmp_path):
    mirror, md5, calls = fake_mirror
    split = datasets.load_mnist()
    assert split.X_train.shape == (30, 784) and split.name == "mnist"
    assert sorted(os.listdir(tmp_path / "cache" / "fastbp" / "mnist")) == sorted(md5)
    assert len(calls) == 4
    datasets.load_mnist()
    assert len(calls) == 4  # the second call used the cache


def test_checksum_mismatch_leaves_nothing_in_cache(fake_mirror, tmp_path):
    mirror, md5, calls = fake_mirror
    md5["t10k-images-idx3-ubyte.gz"] = "0" * 32
    with pytest.raises(DataError, match=r"wrong checksum: expected MD5 0{32}, got [0-9a-f]{32}"):
        datasets.load_mnist()
    assert "t10k-images-idx3-ubyte.gz" not in os.listdir(tmp_path / "cache" / "fastbp" / "mnist")
    assert not [f for f in os.listdir(tmp_path / "cache" / "fastbp" / "mnist") if f.endswith(".part")]


def test_unreachable_mirrors_give_a_clear_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTBP_DATA", raising=False)

    def offline(url, timeout):
        assert timeout <= 5
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"no mirror answered.*name resolution.*FASTBP_DATA"):
        datasets.load_mnist()
    with pytest.raises(DataError, match="downloading is off"):
        datasets.load_mnist(download=False)


def test_fastbp_data_and_data_dir_are_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make_idx_dir(tmp_path / "env" / "mnist", n_train=12)
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "env"))
    assert datasets.load_mnist(download=False).X_train.shape[0] == 12
    make_idx_dir(tmp_path / "mine", n_train=7)
    assert datasets.load_mnist(data_dir=tmp_path / "mine", download=False).X_train.shape[0] == 7


def test_small_offline_sets_and_dispatch(tmp_path):
    d = datasets.load_digits()
    assert d.X_train.shape == (1500, 64) and d.X_train.dtype == np.uint8 and d.X_train.max() == 255
    assert d.X_test.shape == (297, 64) and set(np.unique(d.y_train)) == set(range(10))
    m = datasets.make_moons(200)
    assert m.X_train.shape == (140, 2) and m.X_test.shape == (60, 2) and set(np.unique(m.y_train)) == {0, 1}
    assert datasets.load_dataset("digits").name == "digits"
    assert datasets.load_dataset(str(make_idx_dir(tmp_path / "x"))).X_test.shape == (10, 784)
    with pytest.raises(ValueError, match="dataset: expected mnist, fashion-mnist, digits, moons"):
        datasets.load_dataset("cifar")
