"""atomic_write, the one way fastbp writes files: errors name the user's path, existing files keep
their permissions (read-only ones are not replaced)."""
import errno
import os
import stat

import pytest

import fastbp as fb
from fastbp import _io
from fastbp._io import atomic_write


def temps(folder, name="m.npz"):
    return sorted(p.name for p in folder.glob(f".{name}.*.tmp"))


@pytest.fixture
def net():
    return fb.Network.from_sizes([2, 3, 2], backend="numpy", seed=0)


# --- errors name the user's path -------------------------------------------------------------
def test_save_into_a_missing_folder_names_the_path_not_the_temp_file(tmp_path, net):
    path = tmp_path / "missing" / "m.npz"
    with pytest.raises(FileNotFoundError) as e:
        net.save(path)
    assert e.value.filename == str(path) and str(path) in str(e.value) and ".tmp" not in str(e.value)


def test_save_onto_a_folder_names_the_path(tmp_path, net):
    (tmp_path / "m.npz").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        net.save(tmp_path / "m.npz")
    assert e.value.filename == str(tmp_path / "m.npz") and ".tmp" not in str(e.value)
    assert temps(tmp_path) == []


@pytest.mark.parametrize("path", ["", "sub/"])
def test_empty_path_or_folder_name_is_refused(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError) as e:
        with atomic_write(path) as f:
            f.write(b"x")
    assert e.value.filename == path
    assert os.listdir(tmp_path) == []  # "sub/" did not become a file named sub


def test_a_failing_write_names_the_path_and_leaves_nothing(tmp_path):
    path = tmp_path / "m.npz"
    with pytest.raises(OSError) as e:
        with atomic_write(path) as f:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert "No space left on device" in str(e.value) and ".tmp" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_other_errors_from_the_block_pass_unchanged(tmp_path):
    # a download's network error is the source's fault, not the file's: it is not renamed
    with pytest.raises(ConnectionResetError) as e:
        with atomic_write(tmp_path / "m.npz") as f:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert e.value.filename is None
    assert os.listdir(tmp_path) == []


def test_check_writable_says_what_is_wrong(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    cases = {tmp_path / "missing" / "m.npz": "folder", tmp_path / "file" / "m.npz": "not a folder",
             tmp_path: "Is a directory"}
    for path, words in cases.items():
        with pytest.raises(OSError) as e:
            _io.check_writable(path)
        assert e.value.filename == str(path) and words in e.value.strerror
    _io.check_writable(tmp_path / "new.npz")
    assert os.listdir(tmp_path) == ["file"]  # the probe is gone


# --- existing files: permissions ----------------------------------------------------------------
def test_a_read_only_file_is_not_replaced(tmp_path, net):
    path = tmp_path / "m.npz"
    path.write_bytes(b"precious")
    path.chmod(0o444)
    with pytest.raises(PermissionError) as e:
        net.save(path)
    assert e.value.filename == str(path) and "read-only" in str(e.value)
    assert path.read_bytes() == b"precious" and stat.S_IMODE(path.stat().st_mode) == 0o444
    assert temps(tmp_path) == []


def test_a_replaced_file_keeps_its_permissions(tmp_path, net):
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    path.chmod(0o640)
    net.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert fb.Network.load(path, backend="numpy").sizes == [2, 3, 2]


def test_a_new_file_gets_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "m.npz") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.npz").stat().st_mode) == 0o640
