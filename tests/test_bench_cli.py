"""``fastbp bench`` (the package's benchmark: --json, --plot, --compare, its errors) and ``fastbp train
--plot/--history`` with History.to_json/plot. Tiny data (scikit-learn's digits), one epoch."""
import json
import subprocess
import sys

import numpy as np
import pytest

import fastbp as fb
from fastbp import cli

matplotlib = pytest.importorskip("matplotlib")  # the plot extra
from matplotlib import image  # noqa: E402


def bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastbp", "bench", "--dataset", "digits", "--epochs", "1", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    run = bench("--engines", "numpy-f32,numba-f32-t1", "--json", "b.json", "--plot", "b.png", cwd=folder)
    return folder, run


def test_bench_writes_the_table_the_json_and_the_plot(first_run):
    folder, run = first_run
    assert run.returncode == 0, run.stderr
    assert "| fastbp numpy float32 |" in run.stdout and "| fastbp numba float32, 1 thread |" in run.stdout
    assert "[1/2] fastbp numpy float32" in run.stderr and "[2/2]" in run.stderr  # progress on stderr
    data = json.loads((folder / "b.json").read_text())
    assert {"machine", "date", "config", "args", "results"} <= set(data)
    assert data["config"]["dataset"] == "digits" and data["config"]["batch_size"] == 10
    assert [r["engine"] for r in data["results"]] == ["numpy-f32", "numba-f32-t1"]
    for r in data["results"]:
        assert {"label", "seconds", "seconds_per_epoch", "samples_per_second", "accuracy"} <= set(r)
        assert r["seconds_per_epoch"] == pytest.approx(float(np.median(r["seconds"])))
        assert r["samples_per_second"] == pytest.approx(r["n"] / r["seconds_per_epoch"])
    png = image.imread(folder / "b.png")
    assert png.shape[1] == 900 and png.shape[0] == int(100 * (1.2 + 0.38 * 2)) and png.shape[2] in (3, 4)
    assert png[..., :3].std() > 0.05  # something is drawn


def test_compare_passes_on_its_own_output_and_fails_on_a_faster_baseline(first_run):
    folder, _ = first_run
    same = bench("--engines", "numpy-f32", "--compare", "b.json", "--tolerance", "3", cwd=folder)
    assert same.returncode == 0, same.stderr
    assert "| fastbp numpy float32 |" in same.stdout.split("baseline s/epoch")[1] and "| ok |" in same.stdout
    doctored = json.loads((folder / "b.json").read_text())
    for r in doctored["results"]:
        r["seconds"] = [s / 1000 for s in r["seconds"]]  # a baseline 1000x faster: this run is slower
    (folder / "fast.json").write_text(json.dumps(doctored))
    slower = bench("--engines", "numpy-f32", "--compare", "fast.json", cwd=folder)
    assert slower.returncode == 1 and "| slower |" in slower.stdout
    assert "slower than fast.json by more than 10%: numpy-f32" in slower.stdout


@pytest.mark.parametrize("args,message", [
    (("--engines", "numpy,bogus"), "--engines: unknown bogus"),
    (("--dataset", "cifar"), "--dataset: expected one of fashion-mnist, mnist, mnist-test, digits"),
    (("--json", "no/such/folder/b.json"), "--json: no/such/folder/b.json:"),
    (("--plot", "."), "--plot: .:"),
    (("--compare", "missing.json"), "--compare: missing.json: No such file"),
    (("--compare", "other.json"), "--compare: other.json is of another configuration: batch_size 100 there, 10 here"),
    (("--epochs", "0"), "--epochs: expected an integer >= 1"),
])
def test_bad_arguments_are_one_line_errors_before_any_timing(tmp_path, args, message):
    (tmp_path / "other.json").write_text(json.dumps({"config": {
        "dataset": "digits", "batch_size": 100, "lr": 3.0, "sklearn_lr": 0.1, "blas_threads": 1, "ensemble": None},
        "results": []}))
    run = bench(*args, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("fastbp bench: error: ") and message in run.stderr
    assert "| engine |" not in run.stdout and "[1/" not in run.stderr  # nothing was timed


def test_train_writes_curves_and_history(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "digits", "--epochs", "3", "--no-progress", "--plot",
                     str(tmp_path / "c.png"), "--history", str(tmp_path / "h.json")])
    assert code == 0
    history = json.loads((tmp_path / "h.json").read_text())
    assert len(history["loss"]) == len(history["val_accuracy"]) == 3 and history["engine"]
    png = image.imread(tmp_path / "c.png")
    assert png.shape[:2] == (360, 900)
    assert "training curves written to" in capsys.readouterr().out


def test_train_refuses_plots_without_matplotlib_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = cli.main(["train", "--dataset", "digits", "--epochs", "1", "--plot", str(tmp_path / "c.png")])
    err = capsys.readouterr()
    assert code == 2 and 'plots need matplotlib: pip install "fastbp[plot]"' in err.err
    assert "training" not in err.out and not (tmp_path / "c.png").exists()


def test_an_ensembles_history_is_json_and_a_plot_with_a_line_per_member(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.random((60, 8)), rng.integers(0, 3, 60)
    ens = fb.Ensemble.from_sizes([8, 5, 3], n_models=3, activation="relu", output_activation="identity",
                                 backend="numpy")
    with np.errstate(all="ignore"):  # member 1 diverges in epoch 1: NaN after it
        h = ens.fit(X * 1000, y, epochs=2, lr=[1e-6, 1e6, 1e-6], validation_data=(X, y))
    data = json.loads(h.to_json(tmp_path / "h.json"))
    assert json.loads((tmp_path / "h.json").read_text()) == data
    assert data["diverged"] == {"1": 1} and data["loss"][1][1] is None  # NaN as null: standard JSON
    h.plot(tmp_path / "e.png")
    assert image.imread(tmp_path / "e.png").shape[:2] == (360, 900)


def test_the_sparse_family_runs_the_first_layer_dense_and_sparse_and_names_the_engine(tmp_path):
    from fastbp import bench as B

    assert [B.threads_of(e) for e in B.SPARSE_ENGINES] == [1, 1, 2, 2]
    assert B.label("numba-f32-t2-sparse") == "fastbp numba float32, 2 threads, sparse first layer"
    dry = bench("--engines", "sparse", "--threads", "1", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "would run: numba-f32-t1-dense, numba-f32-t1-sparse" in dry.stdout
    run = bench("--engines", "numba-f32-t1-dense,numba-f32-t1-sparse", "--json", "s.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    assert [r["fastbp_engine"] for r in rows] == [["numba-fused-1t"], ["numba-sparse-1t"]]
    assert "engine numba-sparse-1t" in run.stdout
