"""fastbp.compat: Nielsen's network.py / network2.py API and mnist_loader, checked against a
plain per-example implementation of the book's algorithm written here."""
import gzip
import json
import pickle
import random

import numpy as np
import pytest

import fastbp.compat.network2 as network2
import fastbp.compat.nielsen as network
from fastbp import kernels

BACKENDS = ["numpy"] + [name for name in ("numba",) if kernels.available(name)]
SIZES = [6, 5, 3]


# --- the book's algorithm, one example at a time (the reference) ---------------------------
def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


class Book:
    """network.py / network2.py as the book writes them: per-example backprop, summed per batch."""

    def __init__(self, weights, biases, cost="quadratic"):
        self.weights = [w.copy() for w in weights]
        self.biases = [b.copy() for b in biases]
        self.cost = cost

    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights):
            a = sig(w @ a + b)
        return a

    def backprop(self, x, y):
        activation, activations, zs = x, [x], []
        for b, w in zip(self.biases, self.weights):
            zs.append(w @ activation + b)
            activation = sig(zs[-1])
            activations.append(activation)
        delta = activations[-1] - y
        if self.cost == "quadratic":
            delta = delta * sig(zs[-1]) * (1 - sig(zs[-1]))
        nabla_b, nabla_w = [None] * len(self.biases), [None] * len(self.weights)
        nabla_b[-1], nabla_w[-1] = delta, delta @ activations[-2].T
        for l in range(2, len(self.weights) + 1):
            sp = sig(zs[-l]) * (1 - sig(zs[-l]))
            delta = (self.weights[-l + 1].T @ delta) * sp
            nabla_b[-l], nabla_w[-l] = delta, delta @ activations[-l - 1].T
        return nabla_b, nabla_w

    def update_mini_batch(self, batch, eta, lmbda=0.0, n=1):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in batch:
            db, dw = self.backprop(x, y)
            nabla_b = [nb + d for nb, d in zip(nabla_b, db)]
            nabla_w = [nw + d for nw, d in zip(nabla_w, dw)]
        self.weights = [(1 - eta * lmbda / n) * w - (eta / len(batch)) * nw
                        for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def SGD(self, training_data, epochs, m, eta, lmbda=0.0):
        training_data = list(training_data)
        n = len(training_data)
        for _ in range(epochs):
            random.shuffle(training_data)
            for k in range(0, n, m):
                self.update_mini_batch(training_data[k:k + m], eta, lmbda, n)


def book_data(n=23, n_test=9, sizes=SIZES, seed=1):
    rng = np.random.default_rng(seed)
    train = [(rng.random((sizes[0], 1)), network.vectorized_result(int(rng.integers(sizes[-1])), sizes[-1]))
             for _ in range(n)]
    test = [(rng.random((sizes[0], 1)), int(rng.integers(sizes[-1]))) for _ in range(n_test)]
    return train, test


def assert_same_params(net, ref, rtol=1e-10):
    for a, b in zip(net.weights + net.biases, ref.weights + ref.biases):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)


# --- same seed, same numbers ---------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_network_sgd_equals_book_per_example(backend, capsys):
    train, test = book_data()
    np.random.seed(3)
    net = network.Network(SIZES, backend=backend, dtype="float64")
    np.random.seed(3)  # the book's initialisation: biases then weights, np.random.randn
    biases = [np.random.randn(y, 1) for y in SIZES[1:]]
    weights = [np.random.randn(y, x) for x, y in zip(SIZES[:-1], SIZES[1:])]
    assert_same_params(net, Book(weights, biases), rtol=0)
    ref = Book(net.weights, net.biases)
    random.seed(7)
    net.SGD(train, 2, 4, 3.0, test_data=test)  # 23 samples: the last batch has 3
    random.seed(7)
    ref.SGD(train, 2, 4, 3.0)
    assert_same_params(net, ref)
    correct = sum(int(np.argmax(ref.feedforward(x)) == y) for x, y in test)
    assert capsys.readouterr().out.splitlines()[-1] == f"Epoch 1: {correct} / {len(test)}"
    assert net.evaluate(test) == correct


@pytest.mark.skipif("numba" not in BACKENDS, reason="the numba backend")
def test_sgd_makes_one_plan_per_call_sparse_on_mostly_zero_digits(monkeypatch):
    """The book's loop trains through one training plan per SGD call, as Network.fit does: on
    mostly-zero inputs (like MNIST's digits) that is the sparse first layer, with the book's numbers."""
    from fastbp.kernels.numba_backend import NumbaBackend

    train, _ = book_data(n=40, sizes=[30, 5, 3])
    train = [(x * (x > 0.8), y) for x, y in train]  # 20% nonzero
    plans = []
    original = NumbaBackend.make_plan

    def spy(self, *args, **kwargs):
        plan = original(self, *args, **kwargs)
        plans.append(plan.input_major)
        return plan

    monkeypatch.setattr(NumbaBackend, "make_plan", spy)
    np.random.seed(3)
    net = network.Network([30, 5, 3], backend="numba", dtype="float64")
    ref = Book(net.weights, net.biases)
    random.seed(7)
    net.SGD(train, 3, 4, 3.0)
    random.seed(7)
    ref.SGD(train, 3, 4, 3.0)
    assert plans == [True]
    assert_same_params(net, ref, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cost", [network2.CrossEntropyCost, network2.QuadraticCost])
def test_network2_sgd_with_l2_equals_book_per_example(backend, cost, capsys):
    train, test = book_data()
    np.random.seed(4)
    net = network2.Network(SIZES, cost=cost, backend=backend, dtype="float64")
    ref = Book(net.weights, net.biases, "quadratic" if cost is network2.QuadraticCost else "ce")
    random.seed(8)
    result = net.SGD(train, 2, 5, 0.5, lmbda=2.0, evaluation_data=test,
                     monitor_evaluation_cost=True, monitor_evaluation_accuracy=True,
                     monitor_training_cost=True, monitor_training_accuracy=True)
    random.seed(8)
    ref.SGD(train, 2, 5, 0.5, lmbda=2.0)
    assert_same_params(net, ref)
    evaluation_cost, evaluation_accuracy, training_cost, training_accuracy = result
    assert [len(r) for r in result] == [2, 2, 2, 2]

    def book_total_cost(data, one_hot):
        total = 0.0
        for x, y in data:
            a = ref.feedforward(x)
            y = y if one_hot else network2.vectorized_result(y, SIZES[-1])
            total += cost.fn(a, y) / len(data)
        return total + 0.5 * (2.0 / len(data)) * sum(np.linalg.norm(w) ** 2 for w in ref.weights)

    assert evaluation_cost[-1] == pytest.approx(book_total_cost(test, False), rel=1e-9)
    assert training_cost[-1] == pytest.approx(book_total_cost(train, True), rel=1e-9)
    assert evaluation_accuracy[-1] == sum(int(np.argmax(ref.feedforward(x)) == y) for x, y in test)
    assert training_accuracy[-1] == sum(int(np.argmax(ref.feedforward(x)) == np.argmax(y)) for x, y in train)
    out = capsys.readouterr().out
    assert "Epoch 1 training complete" in out
    assert f"Accuracy on evaluation data: {evaluation_accuracy[-1]} / {len(test)}" in out


def test_update_mini_batch_backprop_and_cost_derivative_match_book():
    train, _ = book_data(n=6)
    net = network.Network(SIZES, backend="numpy")
    ref = Book(net.weights, net.biases)
    for got, want in zip(net.backprop(*train[0]), ref.backprop(*train[0])):
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-10)
    net.update_mini_batch(train, 2.0)
    ref.update_mini_batch(train, 2.0)
    assert_same_params(net, ref)
    a, y = np.array([[0.2], [0.7]]), np.array([[0.0], [1.0]])
    np.testing.assert_array_equal(net.cost_derivative(a, y), a - y)
    np.testing.assert_allclose(net.feedforward(train[1][0]), ref.feedforward(train[1][0]), rtol=1e-12)
    net2 = network2.Network(SIZES, backend="numpy")
    ref2 = Book(net2.weights, net2.biases, "ce")
    net2.update_mini_batch(train, 0.5, 3.0, 60)
    ref2.update_mini_batch(train, 0.5, 3.0, 60)
    assert_same_params(net2, ref2)


# --- weights and biases: readable, assignable ------------------------------------------------
def test_weights_and_biases_are_assignable_lists_and_element_edits_count():
    train, test = book_data()
    net = network.Network(SIZES, backend="numpy")
    assert net.num_layers == 3 and net.sizes == SIZES
    assert [w.shape for w in net.weights] == [(5, 6), (3, 5)]
    assert [b.shape for b in net.biases] == [(5, 1), (3, 1)]
    net.weights[0][:] = 0.0  # in-place edit of an element
    net.biases[1] = np.full((3, 1), 0.25)  # replacing an element
    expected_out = sig(net.weights[1] @ sig(net.biases[0]) + 0.25)
    np.testing.assert_allclose(net.feedforward(train[0][0]), expected_out, rtol=1e-12)
    assert net.evaluate(test) == sum(int(np.argmax(expected_out) == y) for _, y in test)
    rng = np.random.default_rng(5)
    net.weights = [rng.normal(size=(5, 6)), rng.normal(size=(3, 5))]  # replacing the list
    ref = Book(net.weights, net.biases)
    random.seed(2)
    net.SGD(train, 1, 4, 1.0)
    random.seed(2)
    ref.SGD(train, 1, 4, 1.0)
    assert_same_params(net, ref)


def test_wrong_weight_shapes_are_named():
    train, _ = book_data()
    net = network.Network(SIZES, backend="numpy")
    net.weights[1] = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"weights\[1\]: expected shape \(3, 5\), got \(5, 3\)"):
        net.SGD(train, 1, 4, 1.0)


@pytest.mark.parametrize("module", [network, network2])
def test_feedforward_takes_a_1d_input_as_a_column_as_training_does(module):
    train, test = book_data()
    np.random.seed(0)
    net = module.Network(SIZES, backend="numpy")
    x = train[0][0]
    column = net.feedforward(x)
    flat = net.feedforward(x.ravel())  # the book's broadcasting made this a (3, 5) array
    assert column.shape == flat.shape == (3, 1)
    np.testing.assert_array_equal(flat, column)
    np.testing.assert_allclose(flat, Book(net.weights, net.biases).feedforward(x), rtol=1e-12)
    assert net.feedforward(np.hstack([x, 2 * x])).shape == (3, 2)  # several columns still work
    # training and evaluation take (6,) inputs too; they mean the same sample
    flat_test = [(x.ravel(), y) for x, y in test]
    assert net.evaluate(flat_test) == sum(int(np.argmax(net.feedforward(x)) == y) for x, y in flat_test)
    assert net.evaluate(flat_test) == net.evaluate(test)
    net.biases = [b.ravel() for b in net.biases]  # 1-D biases (training accepts them) are columns too
    np.testing.assert_array_equal(net.feedforward(x.ravel()), column)
    assert net.evaluate(test) == net.evaluate(flat_test)


@pytest.mark.parametrize("bad,got", [(np.zeros(5), r"\(5,\)"), (np.zeros((1, 6)), r"\(1, 6\)"),
                                     (np.zeros((6, 1, 1)), r"\(6, 1, 1\)")])
def test_feedforward_rejects_other_shapes_by_name(bad, got):
    net = network.Network(SIZES, backend="numpy")
    with pytest.raises(ValueError, match=r"feedforward: expected a of shape \(6, 1\) \(or \(6,\), or "
                                         r"columns \(6, k\)\), got shape " + got):
        net.feedforward(bad)


# --- data in the book's format --------------------------------------------------------------
def test_zip_iterators_and_lists_give_the_same_result():
    train, test = book_data()
    nets = []
    for wrap in (list, lambda d: zip(*zip(*d))):
        np.random.seed(0)
        random.seed(0)
        net = network.Network(SIZES, backend="numpy")
        net.SGD(wrap(train), 1, 4, 1.0, test_data=wrap(test))
        nets.append(net)
    assert_same_params(*nets, rtol=0)


def test_whole_array_and_element_by_element_conversions_agree():
    from fastbp.compat._book import as_arrays

    train, _ = book_data()
    X, labels = as_arrays(train, 6, 3)  # whole-array path
    assert X.flags.c_contiguous and X.shape == (23, 6)
    mixed = [(x.ravel(), int(np.argmax(y))) if i % 2 else (x, y) for i, (x, y) in enumerate(train)]
    X2, labels2 = as_arrays(mixed, 6, 3)  # (6,) columns and int labels: element by element
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(labels, [int(np.argmax(y)) for _, y in train])


@pytest.mark.parametrize("bad,message", [
    (lambda d: d[:3] + [(np.zeros((7, 1)), d[3][1])] + d[4:], r"training_data\[3\]: expected x of shape \(6, 1\), got shape \(7, 1\)"),
    (lambda d: d[:2] + [(d[2][0], np.full((3, 1), 0.5))] + d[3:], r"training_data\[2\]: expected a one-hot target"),
    (lambda d: d[:4] + [(d[4][0], np.zeros((10, 1)))] + d[5:], r"training_data\[4\]: expected y .* shape \(3, 1\), got shape \(10, 1\)"),
    (lambda d: d[:1] + [(d[1][0], 5)] + d[2:], r"training_data\[1\]: expected a label in 0\.\.2, got 5"),
    (lambda d: d[:5] + [d[5][0]] + d[6:], r"training_data\[5\]: expected a pair \(x, y\)"),
])
def test_malformed_training_data_names_the_element_and_shape(bad, message):
    train, _ = book_data()
    net = network.Network(SIZES, backend="numpy")
    with pytest.raises(ValueError, match=message):
        net.SGD(bad(train), 1, 4, 1.0)


def test_malformed_test_data_is_named():
    train, test = book_data()
    net = network.Network(SIZES, backend="numpy")
    test[2] = (np.zeros(5), 1)
    with pytest.raises(ValueError, match=r"test_data\[2\]: expected x of shape \(6, 1\)"):
        net.SGD(train, 1, 4, 1.0, test_data=test)
    with pytest.raises(TypeError, match="a pair of arrays"):
        net.evaluate((np.zeros((4, 6)), np.zeros(4, dtype=int)))


# --- network2 extras ------------------------------------------------------------------------
def test_network2_initializers_and_cost_functions():
    np.random.seed(1)
    net = network2.Network(SIZES)
    np.random.seed(1)
    biases = [np.random.randn(y, 1) for y in SIZES[1:]]
    weights = [np.random.randn(y, x) / np.sqrt(x) for x, y in zip(SIZES[:-1], SIZES[1:])]
    assert_same_params(net, Book(weights, biases), rtol=0)
    np.random.seed(1)
    net.large_weight_initializer()
    np.random.seed(1)
    np.random.randn(5, 1), np.random.randn(3, 1)
    np.testing.assert_array_equal(net.weights[0], np.random.randn(5, 6))
    a, y = np.array([[0.9], [0.2]]), np.array([[1.0], [0.0]])
    assert network2.QuadraticCost.fn(a, y) == pytest.approx(0.5 * (0.01 + 0.04))
    assert network2.CrossEntropyCost.fn(a, y) == pytest.approx(-np.log(0.9) - np.log(0.8))
    np.testing.assert_allclose(network2.CrossEntropyCost.delta(None, a, y), a - y)
    with pytest.raises(TypeError, match="cost: expected"):
        network2.Network(SIZES, cost=object)


def test_network2_save_load_book_json_both_ways(tmp_path):
    net = network2.Network(SIZES, cost=network2.QuadraticCost, backend="numpy")
    path = tmp_path / "net.json"
    net.save(path)
    data = json.loads(path.read_text())
    assert set(data) == {"sizes", "weights", "biases", "cost"}
    assert data["cost"] == "QuadraticCost" and data["sizes"] == SIZES
    np.testing.assert_array_equal(np.array(data["weights"][1]), net.weights[1])
    assert np.array(data["biases"][0]).shape == (5, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["net.json"]  # no temporary file left
    # a file as the book's own save() writes it
    rng = np.random.default_rng(0)
    book = {"sizes": [4, 2], "weights": [rng.normal(size=(2, 4)).tolist()],
            "biases": [rng.normal(size=(2, 1)).tolist()], "cost": "CrossEntropyCost"}
    (tmp_path / "book.json").write_text(json.dumps(book))
    loaded = network2.load(tmp_path / "book.json")
    assert loaded.cost is network2.CrossEntropyCost and loaded.sizes == [4, 2]
    np.testing.assert_array_equal(loaded.weights[0], np.array(book["weights"][0]))
    np.testing.assert_array_equal(loaded.biases[0], np.array(book["biases"][0]))
    x = rng.random((4, 1))
    np.testing.assert_allclose(loaded.feedforward(x), sig(loaded.weights[0] @ x + loaded.biases[0]))
    book["cost"] = "LogCost"
    (tmp_path / "bad.json").write_text(json.dumps(book))
    with pytest.raises(ValueError, match="unknown cost 'LogCost'"):
        network2.load(tmp_path / "bad.json")


def test_network2_early_stopping_stops_after_n_epochs_without_improvement():
    train, test = book_data()
    np.random.seed(0)
    net = network2.Network(SIZES, backend="numpy")
    assert net.accuracy(test) > 0
    # eta tiny: the accuracy cannot improve after the first epoch
    result = net.SGD(train, 50, 5, 1e-9, evaluation_data=test, monitor_evaluation_accuracy=True,
                     early_stopping_n=3)
    assert len(result[1]) == 4


def test_configure_sets_the_default_dtype_and_rejects_bad_values():
    try:
        network.configure(dtype="float32")
        assert network.Network([3, 2]).dtype == "float32"
        with pytest.raises(ValueError, match="dtype"):
            network.configure(dtype="int8")
        with pytest.raises(ValueError, match="backend"):
            network.configure(backend="tpu")
    finally:
        network.configure(backend="auto", dtype="float64")


# --- mnist_loader ----------------------------------------------------------------------------
def fake_mnist(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


def test_mnist_loader_reads_the_books_python2_pickle(tmp_path):
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n)) for n in (12, 4, 5))
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f, protocol=2)  # the protocol Python 2's cPickle wrote
    from fastbp.compat import mnist_loader

    tr_d, va_d, te_d = mnist_loader.load_data(path)
    np.testing.assert_array_equal(tr_d[0], splits[0][0])
    np.testing.assert_array_equal(te_d[1], splits[2][1])
    training_data, validation_data, test_data = mnist_loader.load_data_wrapper(path)
    assert len(training_data) == 12 and len(validation_data) == 4 and len(test_data) == 5
    x, y = training_data[3]
    assert x.shape == (784, 1) and y.shape == (10, 1) and y[splits[0][1][3], 0] == 1.0 and y.sum() == 1
    np.testing.assert_array_equal(x[:, 0], splits[0][0][3])
    assert test_data[2][1] == splits[2][1][2] and isinstance(test_data[2][1], int)
    net = network.Network([784, 5, 10], backend="numpy")
    net.SGD(training_data, 1, 4, 1.0, test_data=test_data)  # the book's data runs as it is


def write_idx(path, array):
    """IDX: 0, 0, type 0x08 (uint8), ndim, then the dimensions as big-endian int32, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_mnist_loader_builds_the_same_tuples_from_idx_files(tmp_path, monkeypatch):
    from fastbp.compat import mnist_loader

    (Xtr, ytr), (Xte, yte) = fake_mnist(18, 0), fake_mnist(5, 1)
    for split, (X, y) in (("train", (Xtr, ytr)), ("t10k", (Xte, yte))):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", X)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", y)
    monkeypatch.setenv("FASTBP_MNIST", str(tmp_path))
    training_data, validation_data, test_data = mnist_loader.load_data_wrapper()
    assert (len(training_data), len(validation_data), len(test_data)) == (15, 3, 5)  # 5/6 of 18 trains
    np.testing.assert_allclose(training_data[2][0][:, 0], Xtr[2].reshape(-1) / 255, rtol=1e-6)
    assert np.argmax(training_data[2][1]) == ytr[2]
    assert validation_data[0][1] == ytr[15] and test_data[4][1] == yte[4]
    assert training_data[0][0].dtype == np.float32


def test_mnist_loader_says_what_it_tried(tmp_path, monkeypatch):
    from fastbp.compat import mnist_loader

    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist_loader.load_data(tmp_path / "nothing.pkl.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="missing train-images-idx3-ubyte"):
        mnist_loader.load_data(tmp_path / "empty")


def test_mnist_loader_uses_fashion_mnist_as_a_stand_in_and_says_so(tmp_path, monkeypatch, capsys):
    from fastbp.compat import mnist_loader

    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    (Xtr, ytr), (Xte, yte) = fake_mnist(12, 2), fake_mnist(4, 3)
    for split, (X, y) in (("train", (Xtr, ytr)), ("t10k", (Xte, yte))):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", X)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", y)
    monkeypatch.chdir(tmp_path)  # no ../data/mnist.pkl.gz
    monkeypatch.delenv("FASTBP_MNIST", raising=False)
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no cached MNIST
    tr_d, va_d, te_d = mnist_loader.load_data()
    assert "using Fashion-MNIST" in capsys.readouterr().err
    assert (len(tr_d[1]), len(va_d[1]), len(te_d[1])) == (10, 2, 4)
    np.testing.assert_array_equal(te_d[1], yte)


# --- bad files: a ValueError naming the file and what is wrong, never a bare library error ----------
def book_json(**changes):
    rng = np.random.default_rng(0)
    data = {"sizes": [4, 2], "weights": [rng.normal(size=(2, 4)).tolist()],
            "biases": [rng.normal(size=(2, 1)).tolist()], "cost": "CrossEntropyCost"}
    data.update(changes)
    return data


def with_entry(key, index, value):
    """book_json() with data[key][0][index] replaced (a matrix entry or a whole row)."""
    data = book_json()
    if isinstance(index, tuple):
        data[key][0][index[0]][index[1]] = value
    else:
        data[key][0][index] = value
    return data


@pytest.mark.parametrize("data,message", [
    ({"sizes": [4, 2], "weights": [], "cost": "CrossEntropyCost"}, r"not a network2 JSON file .*'biases'"),
    (book_json(weights=[np.zeros((4, 2)).tolist()]), r"weights\[0\]: expected shape \(2, 4\), got \(4, 2\)"),
    (book_json(weights=[]), r"weights: expected 1 arrays \(one per layer\), got 0"),
    (with_entry("weights", (1, 2), "x"), r"weights\[0\]\[1\]\[2\]: expected a number, got 'x'"),
    (with_entry("biases", (0, 0), None), r"biases\[0\]\[0\]\[0\]: expected a number, got None"),
    (with_entry("weights", 1, [1.0, 2.0]), r"weights\[0\]: expected a matrix of numbers, got rows of different lengths"),
    (with_entry("weights", (0, 3), float("nan")), r"weights\[0\]: contains NaN or infinite values"),
    (with_entry("biases", (1, 0), float("inf")), r"biases\[0\]: contains NaN or infinite values"),
    (book_json(weights=None), r"weights: expected a list \(one array per layer\), got None"),
    (book_json(sizes=4), r"sizes: expected a list of at least two positive layer sizes, got 4"),
    (book_json(sizes=[4, 0]), r"sizes: expected a list of at least two positive layer sizes, got \[4, 0\]"),
    (book_json(cost=["CrossEntropyCost"]), r"unknown cost \['CrossEntropyCost'\]"),
    ([1, 2, 3], "not a network2 JSON file"),
])
def test_network2_load_names_the_file_and_the_bad_entry(tmp_path, data, message):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(data))  # json writes NaN and Infinity as Python's json reads them
    with pytest.raises(ValueError, match=message) as raised:
        network2.load(path)
    assert type(raised.value) is ValueError and str(raised.value).startswith(f"{path}: ")


def test_network2_load_of_a_file_that_is_not_json(tmp_path):
    for name, content in (("empty.json", b""), ("binary.json", b"\x1f\x8b\x08\x00\xff\xfe")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=f"{tmp_path / name}: not a network2 JSON file"):
            network2.load(tmp_path / name)


def test_wrong_weight_entries_assigned_in_python_are_named():
    net = network.Network(SIZES, backend="numpy")
    net.weights[0] = [[0.0] * 6] * 4 + [[0.0] * 6 + ["w"]]
    with pytest.raises(ValueError, match=r"weights\[0\]\[4\]\[6\]: expected a number, got 'w'"):
        net.evaluate(book_data()[1])


def book_pickle(n=(6, 2, 3), labels_offset=0, parts=3, seed=0):
    rng = np.random.default_rng(seed)
    splits = tuple((rng.random((k, 784)).astype(np.float32), rng.integers(0, 10, k) + labels_offset) for k in n)
    return pickle.dumps(splits[:parts], protocol=2)


GOOD_PICKLE_GZ = gzip.compress(book_pickle())


@pytest.mark.parametrize("content,message", [
    (GOOD_PICKLE_GZ[:len(GOOD_PICKLE_GZ) // 2], "corrupt gzip data"),
    (GOOD_PICKLE_GZ[:20] + bytes(b ^ 0xFF for b in GOOD_PICKLE_GZ[20:40]) + GOOD_PICKLE_GZ[40:], "corrupt gzip data"),
    (b"", "empty file"),
    (gzip.compress(b""), r"empty file \(after decompression\)"),
    (b"hello, not gzip", r"not a pickle .*the name ends in \.gz, but the file is not gzip-compressed"),
    (gzip.compress(b"not a pickle"), r"not a pickle \(UnpicklingError"),
    (gzip.compress(book_pickle()[:-30]), r"not a pickle \(.*\)"),
    (gzip.compress(book_pickle(parts=2)), r"expected the book's \(training, validation, test\) tuple .*got a tuple of 2"),
    (gzip.compress(pickle.dumps({"a": 1})), r"expected the book's \(training, validation, test\) tuple .*got dict"),
    (gzip.compress(book_pickle(labels_offset=5)), r"training labels: expected digit classes 0\.\.9, found 14"),
    (gzip.compress(pickle.dumps(((np.zeros((3, 784)), np.zeros(2, int)),) * 3)), "training: 2 labels for 3 images"),
    (gzip.compress(pickle.dumps(((np.zeros(784), np.zeros(1, int)),) * 3)),
     r"training images: expected a 2-D array \(n, pixels\), \(n, 784\) in the book's file, got shape \(784,\)"),
    (gzip.compress(pickle.dumps(((np.zeros((1, 784)), np.zeros(1, int)),) * 2 + ((np.zeros((1, 28)), np.zeros(1, int)),))),
     "test images have 28 pixels, training images 784"),
    (gzip.compress(pickle.dumps(((np.zeros((1, 784)), np.zeros(1)),) * 3)), r"training labels: expected integer labels, got float64"),
    (gzip.compress(pickle.dumps(((np.full((1, 784), "x"), np.zeros(1, int)),) * 3)), r"training images: expected numbers, got <U1"),
], ids=["truncated-gzip", "flipped-gzip", "empty", "empty-gzip", "not-gzip", "not-a-pickle", "truncated-pickle",
        "two-splits", "dict", "labels-above-9", "count-mismatch", "1-d-images", "widths-differ", "float-labels",
        "text-images"])
def test_mnist_loader_bad_pickle_files_say_what_is_wrong(tmp_path, content, message):
    from fastbp.compat import mnist_loader

    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(content)
    for load in (mnist_loader.load_data, mnist_loader.load_data_wrapper):
        with pytest.raises(ValueError, match=message) as raised:
            load(path)
        assert str(raised.value).startswith(f"{path}: ")


def test_mnist_loader_reads_an_uncompressed_pickle_whatever_its_name(tmp_path):
    from fastbp.compat import mnist_loader

    path = tmp_path / "mnist.pkl"
    path.write_bytes(book_pickle())
    tr_d, va_d, te_d = mnist_loader.load_data(path)
    assert tr_d[0].shape == (6, 784) and te_d[1].dtype == np.int64
