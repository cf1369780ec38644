"""The command line, on small offline data."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp as fb
from fastbp import cli, datasets


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_on_digits_reaches_high_accuracy(capsys, tmp_path):
    model = tmp_path / "digits.npz"
    code, out, err = run(capsys, "train", "--dataset", "digits", "--epochs", "15", "--backend", "numpy",
                         "--no-progress", "--save", str(model))
    assert code == 0, err
    summary = [line for line in out.splitlines() if line.startswith("test accuracy")]
    assert len(summary) == 1 and "backend numpy" in summary[0] and "engine numpy-per-batch" in summary[0]
    accuracy = float(summary[0].split()[2].rstrip(","))
    assert accuracy >= 0.9
    net = fb.Network.load(model, backend="numpy")
    digits = datasets.load_digits()
    assert net.sizes == [64, 30, 10]
    assert net.evaluate(digits.X_test, digits.y_test)["accuracy"] == pytest.approx(accuracy, abs=1e-4)


def test_without_mnist_it_says_which_dataset_it_uses(capsys, monkeypatch):
    def missing(*args, **kwargs):
        raise datasets.DataError("no MNIST files found (offline)")

    monkeypatch.setattr(datasets, "load_mnist", missing)
    monkeypatch.setattr(datasets, "load_fashion_mnist", missing)
    code, out, err = run(capsys, "train", "--epochs", "1", "--backend", "numpy", "--no-progress")
    assert code == 0, err
    first = out.splitlines()[0]
    assert "MNIST is not available (no MNIST files found (offline))" in first
    assert "digits" in first


@pytest.mark.parametrize("argv,message", [
    (["train", "--epochs", "0", "--dataset", "digits"], "epochs"),
    (["train", "--lr", "-1", "--dataset", "digits"], "lr"),
    (["train", "--dataset", "nonexistent-set"], "nonexistent-set"),
    (["train", "--dataset", "digits", "--sizes", "10,5,10"], "--sizes: digits needs 64 inputs"),
    (["train", "--hidden", "30,x"], "--hidden"),
    (["train", "--activation", "swish"], "--activation"),
    (["train", "--backend", "tpu"], "--backend"),
    (["train", "--dataset", "digits", "--backend", "numpy", "--threads", "2"], "--threads: applies to the numba"),
    (["train", "--dataset", "digits", "--backend", "numba", "--threads", "3"], "--threads"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, message):
    try:
        code, out, err = run(capsys, *argv)
    except SystemExit as e:  # argparse's own errors
        code, (_, err) = e.code, capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastbp: error:") and message in lines[0]


def test_threads_option_trains_on_two_numba_workers(capsys):
    pytest.importorskip("numba")
    code, out, err = run(capsys, "train", "--dataset", "digits", "--backend", "numba", "--threads", "2",
                         "--epochs", "3", "--no-progress")
    assert code == 0, err
    assert "numba (float32, 2 threads)" in out.splitlines()[0]
    assert float(out.splitlines()[-1].split("test accuracy ")[1].split(",")[0]) > 0.8


@pytest.mark.parametrize("sparse,engine", [("on", "numba-sparse-1t"), ("off", "numba-fused-1t")])
def test_sparse_option_picks_the_first_layers_engine(capsys, sparse, engine):
    pytest.importorskip("numba")
    code, out, err = run(capsys, "train", "--dataset", "digits", "--backend", "numba", "--sparse", sparse,
                         "--epochs", "1", "--no-progress")
    assert code == 0, err
    assert f"engine {engine}" in out.splitlines()[-1]
    code, out, err = run(capsys, "train", "--dataset", "digits", "--backend", "numpy", "--sparse", sparse,
                         "--epochs", "1", "--no-progress")
    assert code == 2 and "--sparse: applies to the numba backend" in err


def test_idx_folder_dataset(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        datasets.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        datasets.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    code, out, err = run(capsys, "train", "--dataset", str(tmp_path), "--epochs", "1", "--backend", "numpy",
                         "--no-progress")
    assert code == 0, err
    assert "784-30-10" in out and "(60 train, 20 test)" in out


def test_info_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "fastbp", "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "backend numpy : available" in result.stdout
    assert "'auto' resolves to" in result.stdout


def test_examples_are_listed_and_run_by_name(capsys):
    code, out, _ = run(capsys, "examples")
    assert code == 0 and "moons" in out and "worked_222" in out
    code, out, _ = run(capsys, "examples", "himmelblau", "--no-plots")
    assert code == 0 and "to (3.584, -1.848)" in out
    code, _, err = run(capsys, "examples", "zzz")
    assert code == 2 and "zzz" in err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings on the way to NaN
def test_divergence_is_a_one_line_error(capsys):
    code, _, err = run(capsys, "train", "--dataset", "digits", "--activation", "relu", "--output-activation",
                       "identity", "--lr", "10", "--epochs", "3", "--backend", "numpy", "--no-progress")
    assert code == 2
    assert err.startswith("fastbp: error: training diverged in epoch") and len(err.strip().splitlines()) == 1


def run_error(capsys, *argv):
    """``(code, out, err)`` of a failing command, whether argparse or the training reports it."""
    try:
        code, out, err = run(capsys, *argv)
    except SystemExit as e:
        code, (out, err) = e.code, capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_data(monkeypatch):
    """Loading data fails the test: errors must come before it."""
    def load(*args, **kwargs):
        raise AssertionError("data was loaded before the arguments were checked")

    for name in ("load_dataset", "load_mnist", "load_fashion_mnist", "load_digits", "make_moons"):
        monkeypatch.setattr(datasets, name, load)


@pytest.mark.parametrize("argv,message", [
    (["--lr", "-1"], "--lr: expected a positive number, got -1.0"),
    (["--lr", "abc"], "--lr: expected a positive number, got 'abc'"),
    (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
    (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
    (["--momentum", "1"], "--momentum: expected a number >= 0 and < 1.0, got 1.0"),
    (["--weight-decay", "-1"], "--weight-decay: expected a number >= 0, got -1.0"),
    (["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["--seed", "abc"], "--seed: expected an integer >= 0, got 'abc'"),
    (["--hidden", ""], "--hidden: expected at least 1"),
    (["--sizes", "64"], "--sizes: expected at least 2"),
    (["--data-dir", "/nonexistent"], "--data-dir: folder /nonexistent does not exist"),
    (["--save", ""], "--save: expected a file path, got ''"),
    (["--backend", "numpy", "--threads", "2"], "--threads: applies to the numba backend"),
])
def test_bad_values_are_one_line_errors_before_any_data_loads(capsys, no_data, argv, message):
    code, out, err = run_error(capsys, "train", "--dataset", "digits", "--no-progress", *argv)
    assert code == 2 and out == ""  # no banner: nothing was loaded or trained
    assert err.startswith(f"fastbp: error: {message}")
    assert len(err.strip().splitlines()) == 1


def test_data_dir_that_is_a_file_is_an_error(capsys, no_data, tmp_path):
    (tmp_path / "f").write_text("")
    code, out, err = run_error(capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path / "f"))
    assert code == 2 and out == "" and err == f"fastbp: error: --data-dir: {tmp_path / 'f'} is not a folder\n"


def unwritable_folder(tmp_path):
    """A folder this process cannot create files in: mode 0555, or for root (whom modes do not
    stop) /sys, which refuses new files even to root."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o555)
        return folder
    if sys.platform != "linux" or not os.path.isdir("/sys"):
        pytest.skip("running as root, and no /sys to refuse a new file")
    try:
        os.close(os.open("/sys/fastbp-probe", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except OSError:
        return Path("/sys")
    os.unlink("/sys/fastbp-probe")
    pytest.skip("running as root, and /sys takes new files here")


@pytest.mark.parametrize("where", ["missing folder", "folder as path", "file as folder", "unwritable",
                                   "read-only file"])
def test_save_destination_is_checked_before_the_data_loads(capsys, no_data, tmp_path, where):
    (tmp_path / "file").write_text("")
    (tmp_path / "ro.npz").write_text("precious")
    (tmp_path / "ro.npz").chmod(0o444)
    path, words = {
        "missing folder": (tmp_path / "missing" / "m.npz", f"folder {tmp_path / 'missing'} does not exist"),
        "folder as path": (tmp_path, "Is a directory"),
        "file as folder": (tmp_path / "file" / "m.npz", "is not a folder"),
        "unwritable": (unwritable_folder(tmp_path) / "fastbp-test.npz", "cannot create files in folder"),
        "read-only file": (tmp_path / "ro.npz", "read-only"),
    }[where]
    code, out, err = run_error(capsys, "train", "--dataset", "digits", "--save", str(path))
    assert code == 2 and out == ""
    assert err.startswith(f"fastbp: error: --save: {path}: ") and words in err and ".tmp" not in err
    assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "ro.npz").read_text() == "precious"
    assert not list(tmp_path.glob(".*.tmp"))  # the check's probe file is gone


def test_missing_mnist_is_a_one_line_error(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # an empty cache
    (tmp_path / "empty").mkdir()
    code, out, err = run_error(capsys, "train", "--dataset", "mnist", "--no-download",
                               "--data-dir", str(tmp_path / "empty"))
    assert code == 2 and out == ""
    assert err.startswith("fastbp: error: MNIST not found locally, and downloading is off; looked in: ")
    assert str(tmp_path / "empty") in err and "to use it offline" in err
    assert len(err.strip().splitlines()) == 1
