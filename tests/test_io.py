"""atomic_write, the one way fastbp writes files: errors name the user's path, existing files keep
their permissions (read-only ones are not replaced), and stale temporary files are cleaned up."""
import errno
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time

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


# --- stale temporary files ----------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys, time
    from fastbp._io import atomic_write
    with atomic_write(sys.argv[1]) as f:
        f.write(b"x" * 100000)
        f.flush()
        print("writing", flush=True)
        if sys.argv[2] == "sleep":
            time.sleep(600)
        else:
            sys.stdin.readline()  # finishes when the test says so
    print("saved", flush=True)
""")


def start_writer(path, how):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    if line != "writing\n":
        stop(proc)
        pytest.fail(f"the writer subprocess did not start writing within 120 s (said {line!r})")
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_save_after_kill_9_removes_the_killed_writers_temp_file(tmp_path, net):
    path = tmp_path / "m.npz"
    proc = start_writer(path, "sleep")  # in the middle of a save, sleeping inside atomic_write
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL
    assert len(temps(tmp_path)) == 1 and not path.exists()  # what the kill left
    net.save(path)
    assert temps(tmp_path) == []
    assert fb.Network.load(path, backend="numpy").sizes == [2, 3, 2]


def test_a_live_writers_temp_file_is_left_alone(tmp_path, net):
    path = tmp_path / "m.npz"
    proc = start_writer(path, "wait")
    try:
        (live,) = temps(tmp_path)
        net.save(path)  # a concurrent save of the same path
        assert temps(tmp_path) == [live]
        out, _ = proc.communicate("go\n", timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 0 and out == "saved\n"  # its rename found its file
    assert temps(tmp_path) == [] and path.read_bytes() == b"x" * 100000


def test_foreign_temp_files_are_removed_only_when_old_and_only_for_that_path(tmp_path):
    path = tmp_path / "m.npz"
    old = time.time() - getattr(_io, "STALE_SECONDS", 3600) - 60
    names = {
        ".m.npz.0123abcd.tmp": True,                       # the older form, no PID: by age
        ".m.npz.ffffffff-12345.89abcdef.tmp": True,        # another machine's: by age
    }
    for name in names:
        (tmp_path / name).write_bytes(b"old")
        os.utime(tmp_path / name, (old, old))
    fresh = [".m.npz.4567cdef.tmp", ".m.npz.ffffffff-12345.01234567.tmp"]
    others = [".m.npz.bak", ".n.npz.0123abcd.tmp", ".m.npz.0123abcd.tmp.keep", "m.npz.0123abcd.tmp"]
    for name in fresh + others:
        (tmp_path / name).write_bytes(b"x")
    for name in others:
        os.utime(tmp_path / name, (old, old))
    with atomic_write(path) as f:
        f.write(b"new")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", *fresh, *others])
