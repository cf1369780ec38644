"""The worked textbook examples: each one's published figures, plus activation derivatives and
gradcheck against finite differences. Small and fast: numpy backend, tiny nets, short runs."""
import importlib.util
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp as fb
from fastbp import examples
from fastbp.examples import and_gate, derivatives, himmelblau, moons, nielsen_mnist, per_sample_221, worked_222

ROOT = Path(__file__).resolve().parents[1]
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def close_to_printed(value, printed):
    """``value`` agrees with the published decimal string ``printed`` to its last printed digit."""
    decimals = len(printed.split(".")[1])
    return abs(value - float(printed)) <= 0.5 * 10.0 ** -decimals + 1e-15


def assert_pngs(folder, names):
    umask = os.umask(0)
    os.umask(umask)
    for name in names:
        data = (folder / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~umask, name  # not mkstemp's 0600
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # written atomically


def no_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)


# --- the registry and the scripts ---------------------------------------------------------
def test_registry_lists_every_example_with_a_module_a_script_and_a_docstring():
    names = [name for name, _ in examples.list_examples()]
    assert names == list(examples.EXAMPLES)
    assert {"worked_222", "and_gate", "per_sample_221", "moons", "nielsen_mnist", "himmelblau"} <= set(names)
    for name in names:
        module = examples.get_module(name)
        assert callable(module.main)
        doc = module.__doc__
        assert "Source:" in doc and "Published figures:" in doc and "fastbp" in doc, name
        script = ROOT / "scripts" / "examples" / f"{name}.py"
        assert f"from fastbp.examples import {name}" in script.read_text(), name


def test_run_rejects_an_unknown_name_listing_the_choices():
    with pytest.raises(ValueError, match=r"example: expected one of worked_222, .*moons.*, got 'nope'"):
        examples.run("nope")


# --- 1. the 2-2-2 worked example ------------------------------------------------------------
def mazur_reference(steps):
    """The worked example in plain Python floats, written from the source's equations."""
    s = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    i1, i2, t1, t2, b1, b2 = 0.05, 0.10, 0.01, 0.99, 0.35, 0.60
    w = [0.15, 0.20, 0.25, 0.30, 0.40, 0.45, 0.50, 0.55]  # w1..w8

    def forward(w):
        h1, h2 = s(w[0] * i1 + w[1] * i2 + b1), s(w[2] * i1 + w[3] * i2 + b1)
        return h1, h2, s(w[4] * h1 + w[5] * h2 + b2), s(w[6] * h1 + w[7] * h2 + b2)

    def error(w):
        _, _, o1, o2 = forward(w)
        return 0.5 * (t1 - o1) ** 2 + 0.5 * (t2 - o2) ** 2

    errors = [error(w)]
    after_one = None
    for step in range(steps):
        h1, h2, o1, o2 = forward(w)
        d1, d2 = (o1 - t1) * o1 * (1 - o1), (o2 - t2) * o2 * (1 - o2)
        e1, e2 = (d1 * w[4] + d2 * w[6]) * h1 * (1 - h1), (d1 * w[5] + d2 * w[7]) * h2 * (1 - h2)
        grad = [e1 * i1, e1 * i2, e2 * i1, e2 * i2, d1 * h1, d1 * h2, d2 * h1, d2 * h2]
        w = [wi - 0.5 * gi for wi, gi in zip(w, grad)]
        if step == 0:
            after_one = list(w)
    return errors[0], after_one, error(w), forward(w)[2:], error(after_one)


def test_worked_222_reproduces_the_published_first_update_to_the_printed_digits():
    r = worked_222.train(steps=1)
    assert close_to_printed(r["error_before"], "0.298371109")
    for ours, printed in zip(r["output_weights"], ["0.35891648", "0.408666186", "0.511301270", "0.561370121"]):
        assert close_to_printed(ours, printed), (ours, printed)
    for ours, printed in zip(r["hidden_weights"], ["0.149780716", "0.19956143", "0.24975114", "0.29950229"]):
        assert close_to_printed(ours, printed), (ours, printed)


def test_worked_222_later_figures_are_the_exact_float64_maths():
    r = worked_222.train(steps=10000)
    before, after_one, error_n, outputs_n, error_one = mazur_reference(10000)
    assert r["error_before"] == pytest.approx(before, rel=1e-14)
    np.testing.assert_allclose(np.r_[r["hidden_weights"], r["output_weights"]], after_one, rtol=1e-13)
    assert r["error_after_1"] == pytest.approx(error_one, rel=1e-12)
    assert r["error_after_n"] == pytest.approx(error_n, rel=1e-9)
    np.testing.assert_allclose(r["outputs_after_n"], outputs_n, rtol=1e-10)
    # the published later figures carry rounded hand arithmetic: exact maths differs from them
    assert not close_to_printed(r["error_after_1"], "0.291027924")
    assert abs(r["error_after_1"] - 0.291027924) < 1e-6
    assert abs(r["error_after_n"] - 0.0000351085) < 1e-7


def test_worked_222_main_prints_published_and_exact_figures(capsys):
    assert worked_222.main(["--steps", "3"]) == 0
    text = capsys.readouterr().out
    assert "published 0.298371109" in text and "fastbp    0.298371109" in text
    assert "fastbp    0.358916480 0.408666186 0.511301270 0.561370121" in text


# --- 2. AND gate -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_and_gate_ends_below_005_and_above_095(seed):
    net, history = and_gate.train(seed=seed)
    a = net.predict_proba(and_gate.X)[:, 0]
    assert a[:3].max() < 0.05 and a[3] > 0.95, a
    assert history.loss[-1] < history.loss[0]


def test_and_gate_gradients_are_summed_not_averaged():
    """One textbook update, written out here: w -= lr * sum over the 4 samples of x^T (a - y)."""
    net = and_gate.build_network(seed=3)
    (W1, b1), (W2, b2) = [(p["W"], p["b"]) for p in net.get_params()]
    h = 1 / (1 + np.exp(-(and_gate.X @ W1 + b1)))
    a = 1 / (1 + np.exp(-(h @ W2 + b2)))
    d2 = a - and_gate.Y  # sigmoid + binary cross-entropy
    d1 = (d2 @ W2.T) * h * (1 - h)
    net.fit(and_gate.X, and_gate.Y, epochs=1, batch_size=None, optimizer=fb.SGD(0.1, reduction="sum"),
            shuffle=False)
    after = net.get_params()
    np.testing.assert_allclose(after[1]["W"], W2 - 0.1 * h.T @ d2, rtol=1e-12)
    np.testing.assert_allclose(after[0]["W"], W1 - 0.1 * and_gate.X.T @ d1, rtol=1e-12)
    np.testing.assert_allclose(after[0]["b"], b1 - 0.1 * d1.sum(axis=0), atol=1e-15)


# --- 4. per-sample SGD on the 2-2-1 network ---------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_per_sample_221_new_people_above_09_and_below_01(seed):
    _, history, out = per_sample_221.train(seed=seed)
    assert out["Emily"] > 0.9 and out["Frank"] < 0.1, out
    assert len(history.loss) == 1000


# --- 5. two moons ---------------------------------------------------------------------------
def test_moons_shortened_run_learns_and_records_every_10_epochs():
    data = moons.load(300)
    assert [len(part) for part in data] == [210, 210, 90, 90]
    net = moons.build_network(seed=0, backend="numpy")
    assert net.sizes == [2, 25, 50, 25, 2] and net.dtype == np.float64
    r = moons.train(net, data, epochs=20, lr=0.05, every=10, out=None)
    assert r["epoch"] == [1, 10, 20]
    assert r["accuracy"][-1] >= 0.75  # chance is about 0.5
    assert r["mse"][-1] < r["mse"][0]


def test_moons_initialisation_follows_the_source():
    params = moons.build_network(seed=1, backend="numpy").get_params()
    W = np.concatenate([(p["W"] * np.sqrt(p["W"].shape[1])).ravel() for p in params])
    b = np.concatenate([p["b"] for p in params])
    assert abs(W.mean()) < 0.1 and 0.9 < W.std() < 1.1  # N(0, 1) * sqrt(1 / n_out)
    assert b.min() >= 0 and b.max() < 0.1 and b.max() > 0.09


def test_moons_freeze_biases_keeps_them_as_the_source_does():
    data = moons.load(100)
    net = moons.build_network(seed=0, backend="numpy", freeze_biases=True)
    before = net.get_params()
    moons.train(net, data, epochs=1, out=None)
    for p, q in zip(before, net.get_params()):
        np.testing.assert_array_equal(p["b"], q["b"])
        assert not np.array_equal(p["W"], q["W"])


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib (the plot extra) is not installed")
def test_moons_main_writes_the_three_pngs(tmp_path, capsys):
    argv = ["--n-samples", "120", "--epochs", "2", "--backend", "numpy", "--quiet", "--out", str(tmp_path)]
    assert moons.main(argv) == 0
    assert_pngs(tmp_path, ["moons_data.png", "moons_training.png", "moons_boundary.png"])
    assert "final: MSE" in capsys.readouterr().out


def test_moons_main_without_matplotlib_says_plots_were_skipped(tmp_path, capsys, monkeypatch):
    no_matplotlib(monkeypatch)
    argv = ["--n-samples", "60", "--epochs", "1", "--backend", "numpy", "--quiet", "--out", str(tmp_path)]
    assert examples.run("moons", argv) == 0
    assert "plots skipped: matplotlib is not installed" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


# --- 3. Nielsen's network on MNIST-format data -------------------------------------------------
def write_fixture(folder, n_train=300, n_test=100, seed=0):
    """Four IDX files of 28x28 uint8 'digits': class k is a bright 4x4 block in slot k of a 4x4 grid, plus noise."""
    rng = np.random.default_rng(seed)

    def images(labels):
        X = rng.integers(0, 30, (len(labels), 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            r, c = divmod(int(k), 4)
            X[i, 7 * r + 1:7 * r + 5, 7 * c + 1:7 * c + 5] = 255
        return X

    y, yt = rng.integers(0, 10, n_train).astype(np.uint8), rng.integers(0, 10, n_test).astype(np.uint8)
    for stem, array in (("train-images-idx3-ubyte", images(y)), ("train-labels-idx1-ubyte", y),
                        ("t10k-images-idx3-ubyte.gz", images(yt)), ("t10k-labels-idx1-ubyte.gz", yt)):
        fb.datasets.write_idx(folder / stem, array)
    return folder


def test_nielsen_main_on_an_idx_fixture_prints_each_epoch(tmp_path, capsys):
    folder = write_fixture(tmp_path)
    assert nielsen_mnist.main(["--dataset", str(folder), "--epochs", "3", "--backend", "numpy"]) == 0
    text = capsys.readouterr().out
    assert "784-30-10 sigmoid, quadratic cost, batch 10, eta 3.0, 3 epochs, 300 training" in text
    epochs = re.findall(r"Epoch (\d+): (\d+) / 100 \(.*\), ([0-9.]+) s", text)
    assert [e[0] for e in epochs] == ["0", "1", "2"]
    # chance is 10 / 100; the book's N(0, 1) start leaves some output units saturated for a while,
    # so a few classes may still be missed after 90 updates
    assert int(epochs[-1][1]) >= 40


def test_nielsen_falls_back_to_digits_and_says_so(monkeypatch):
    def missing(*args, **kwargs):
        raise fb.datasets.DataError("not here")

    monkeypatch.setattr(fb.datasets, "load_mnist", missing)
    monkeypatch.setattr(fb.datasets, "load_fashion_mnist", missing)
    said = []
    data = nielsen_mnist.load_data(download=False, out=said.append)
    assert data.name == "digits" and len(said) == 1 and "digits" in said[0] and "MNIST" in said[0]
    net, history = nielsen_mnist.train(data, epochs=3, backend="numpy", out=None)
    assert net.sizes == [64, 30, 10] and len(history.val_accuracy) == 3
    assert history.val_accuracy[-1] > 0.4  # chance is 0.1


# --- Himmelblau -----------------------------------------------------------------------------
def test_himmelblau_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    h = 1e-6
    for p in rng.uniform(-5, 5, (20, 2)):
        numeric = [(himmelblau.himmelblau(*(p + h * e)) - himmelblau.himmelblau(*(p - h * e))) / (2 * h)
                   for e in np.eye(2)]
        np.testing.assert_allclose(himmelblau.himmelblau_grad(p), numeric, rtol=1e-6, atol=1e-5)


def test_himmelblau_four_starts_reach_the_four_minima():
    published = {(4, 0): (3.584, -1.848), (1, 0): (3.0, 2.0), (-4, 0): (-3.779, -3.283), (-2, 2): (-2.805, 3.131)}
    for start, minimum in published.items():
        path = himmelblau.descend(start, lr=0.01, steps=200)
        assert path.shape == (201, 2)
        np.testing.assert_allclose(path[0], start)
        np.testing.assert_allclose(path[-1], minimum, atol=1e-3)  # published to 3 decimals
        assert himmelblau.himmelblau(*path[-1]) < 1e-8
        step = path[1] - path[0]  # one step of fastbp's SGD is p -= lr * grad
        np.testing.assert_allclose(step, -0.01 * himmelblau.himmelblau_grad(path[0]), rtol=1e-12)


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib (the plot extra) is not installed")
def test_himmelblau_main_writes_the_contour_plot(tmp_path, capsys):
    assert himmelblau.main(["--out", str(tmp_path)]) == 0
    assert_pngs(tmp_path, ["himmelblau.png"])
    assert "from (4, 0) to (3.584, -1.848)" in capsys.readouterr().out


# --- activation derivatives and gradcheck ------------------------------------------------------
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_activation_derivatives_match_central_differences(name):
    slope = 0.2
    f, fp = {"sigmoid": (fb.sigmoid, fb.sigmoid_prime), "tanh": (fb.tanh, fb.tanh_prime),
             "relu": (fb.relu, fb.relu_prime),
             "leaky_relu": (lambda z: fb.leaky_relu(z, slope), lambda z: fb.leaky_relu_prime(z, slope))}[name]
    z = np.linspace(-8, 8, 1601)
    z = z[np.abs(z) > 1e-3]  # relu and leaky relu have no derivative at 0
    h = 1e-6
    numeric = (f(z + h) - f(z - h)) / (2 * h)
    np.testing.assert_allclose(fp(z), numeric, atol=1e-8)


def test_activation_derivative_values_from_the_textbook_formulas():
    z = np.array([-2.0, -0.5, 0.5, 2.0])
    s = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(fb.sigmoid_prime(z), s * (1 - s), rtol=1e-14)
    np.testing.assert_allclose(fb.tanh_prime(z), 1 - np.tanh(z) ** 2, rtol=1e-14)
    np.testing.assert_array_equal(fb.relu_prime(z), [0, 0, 1, 1])
    np.testing.assert_array_equal(fb.leaky_relu_prime(z, 0.3), [0.3, 0.3, 1, 1])
    np.testing.assert_allclose(fb.leaky_relu(z, 0.3), [-0.6, -0.15, 0.5, 2.0])


def test_derivatives_demo_check_is_small():
    errors = derivatives.check_derivatives()
    assert set(errors) == {"sigmoid", "tanh", "relu", "leaky_relu(0.1)"}
    assert max(errors.values()) < 1e-8


@pytest.mark.parametrize("hidden,output,loss", [("sigmoid", "sigmoid", "quadratic"),
                                                 ("tanh", "softmax", "cross_entropy"),
                                                 (("leaky_relu", 0.1), "sigmoid", "binary_cross_entropy"),
                                                 ("relu", "identity", "mse")])
def test_gradcheck_agrees_with_backprop_on_small_float64_nets(hidden, output, loss):
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    net = fb.Network([fb.Dense(3, 4, hidden, bias_init=0.1), fb.Dense(4, 2, output)], loss=loss,
                     backend="numpy", dtype="float64", seed=2)
    before = net.get_params()
    result = fb.gradcheck(net, X, y)
    assert len(result.errors) == 2 and all(set(e) == {"W", "b"} for e in result.errors)
    assert result.worst < 1e-6, str(result)
    for p, q in zip(before, net.get_params()):  # the parameters are left as they were
        np.testing.assert_array_equal(p["W"], q["W"])
        np.testing.assert_array_equal(p["b"], q["b"])


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    net = fb.Network([fb.Dense(3, 4, "sigmoid"), fb.Dense(4, 2, "sigmoid")], backend="numpy", dtype="float64",
                     seed=0)
    right = net.gradients(X, y)
    wrong = [dict(g) for g in right]
    wrong[0]["W"] = right[0]["W"] * 1.01  # a 1% error in one layer's weight gradient
    monkeypatch.setattr(net, "gradients", lambda X, y: wrong)
    result = fb.gradcheck(net, X, y)
    assert result.errors[0]["W"] > 1e-3
    assert result.errors[1]["W"] < 1e-6 and result.errors[0]["b"] < 1e-6
    assert "layer  param" in str(result)


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib (the plot extra) is not installed")
def test_derivatives_main_prints_gradcheck_and_writes_the_plot(tmp_path, capsys):
    assert derivatives.main(["--out", str(tmp_path)]) == 0
    assert_pngs(tmp_path, ["activations.png"])
    assert capsys.readouterr().out.count("fb.gradcheck on ") == 4
