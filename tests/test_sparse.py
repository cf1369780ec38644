"""The sparse first layer of the numba engines (``kernels/_nb_sparse.py``) against the dense fused
engine on the same inputs and seed: the weights after an epoch agree within float tolerance (only
the order of the sums differs), for every activation, batch sizes 1, 10 and 100 with short last
batches, frozen parameters, momentum and Adam, one and two threads, ensembles; on real digits
(scikit-learn's, and MNIST's test digits where ../shared has them) and on random sparse data.
Also: the nonzero structure, sparse="auto", and scipy.sparse input with no densifying."""
import os

import numpy as np
import pytest

pytest.importorskip("numba")
sp = pytest.importorskip("scipy.sparse")

import fastbp as fb  # noqa: E402
from fastbp.kernels import numba_backend as nb  # noqa: E402
from fastbp.kernels.sparse import SparseRows, density  # noqa: E402

TOL = {"float64": dict(rtol=1e-9, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}
MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


def random_sparse(n=130, d=40, fraction=0.2, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    X = rng.integers(1, 256, (n, d)).astype(dtype) * (rng.random((n, d)) < fraction)
    X[3] = 0  # a sample without a nonzero input
    y = rng.integers(0, 3, n)
    return X.astype(dtype), y


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.reshape(len(d.images), -1) * 16).clip(0, 255).astype(np.uint8)[:300], d.target[:300]


def train(X, y, sizes, sparse, threads=1, dtype="float32", epochs=1, members=1, **fit):
    be = fb.get_backend("numba", dtype=dtype, threads=threads, sparse=sparse)
    kw = {k: fit.pop(k) for k in ("activation", "output_activation", "loss") if k in fit}
    frozen = fit.pop("frozen", None)
    if members > 1:
        net = fb.Ensemble.from_sizes(sizes, n_models=members, backend=be, **kw)
        nets = net.members
    else:
        net = fb.Network.from_sizes(sizes, backend=be, seed=0, **kw)
        nets = [net]
    if frozen:
        for n in nets:
            n.layers[0].frozen = frozenset(frozen)
    h = net.fit(X, y, epochs=epochs, **fit)
    return [n.get_params() for n in nets], h


def assert_same(a, b, dtype):
    for pa, pb in zip(a, b):
        for la, lb in zip(pa, pb):
            for k in la:
                np.testing.assert_allclose(la[k], lb[k], **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,out,loss", [
    ("sigmoid", "sigmoid", "quadratic"), ("tanh", "softmax", "cross_entropy"), ("relu", "identity", "mse"),
    ("leaky_relu", "sigmoid", "binary_cross_entropy"), ("identity", "exp", "poisson"), ("exp", "softmax", "cross_entropy"),
])
def test_every_activation_trains_as_the_dense_engine(dtype, hidden, out, loss):
    X, y = random_sparse()
    Y = np.eye(3)[y] if loss in ("mse", "poisson") else y
    kw = dict(activation=hidden, output_activation=out, loss=loss, batch_size=10, lr=0.1 if hidden != "exp" else 0.01,
              dtype=dtype)
    (dense, hd), (sparse, hs) = (train(X, Y, [40, 17, 3], s, **kw) for s in (False, True))
    assert (hd["engine"], hs["engine"]) == ("numba-fused-1t", "numba-sparse-1t")
    assert_same(dense, sparse, dtype)
    assert hs["loss"][0] == pytest.approx(hd["loss"][0], rel=1e-4 if dtype == "float32" else 1e-9)


@pytest.mark.parametrize("bs", [1, 10, 100])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "decay"])
def test_batch_sizes_short_last_batches_and_optimisers(bs, optimizer):
    X, y = random_sparse(n=130)  # 130 = 13 batches of 10, one of 100 and one of 30
    opt = {"sgd": fb.SGD(0.5), "momentum": fb.SGD(0.2, momentum=0.9), "nesterov": fb.SGD(0.2, momentum=0.9, nesterov=True),
           "adam": fb.Adam(0.01), "decay": fb.SGD(0.5, weight_decay=0.01)}[optimizer]
    import copy

    (dense, _), (sparse, _) = (train(X, y, [40, 9, 3], s, dtype="float64", batch_size=bs, epochs=2,
                                     optimizer=copy.deepcopy(opt)) for s in (False, True))
    assert_same(dense, sparse, "float64")


@pytest.mark.parametrize("frozen", [("W",), ("b",), ("W", "b")])
def test_frozen_first_layer_parameters(frozen):
    X, y = random_sparse()
    before = fb.Network.from_sizes([40, 9, 3], backend=fb.get_backend("numba", sparse=True), seed=0).get_params()
    (dense, _), (sparse, _) = (train(X, y, [40, 9, 3], s, frozen=frozen, momentum=0.5) for s in (False, True))
    assert_same(dense, sparse, "float32")
    for name in frozen:
        np.testing.assert_array_equal(sparse[0][0][name], before[0][name])


@pytest.mark.parametrize("sizes", [[40, 9, 3], [40, 33, 7, 3], [40, 3]])
def test_two_threads_and_ensembles_train_as_the_dense_engines(sizes):
    X, y = random_sparse()
    for threads, members in ((2, 1), (1, 3), (2, 3)):
        (dense, hd), (sparse, hs) = (train(X, y, sizes, s, threads=threads, members=members, dtype="float64",
                                           batch_size=10, epochs=2, momentum=0.5) for s in (False, True))
        assert hs["engine"].startswith("numba-sparse-") and not hd["engine"].startswith("numba-sparse-")
        assert_same(dense, sparse, "float64")
    if len(sizes) > 2 and nb.TWO_THREADS_SUPPORTED:
        assert train(X, y, sizes, True, threads=2)[1]["engine"] == "numba-sparse-2t"


def test_real_digits_from_scikit_learn(digits):
    X, y = digits
    for threads in (1, 2):
        (dense, _), (sparse, hs) = (train(X, y, [64, 30, 10], s, threads=threads, batch_size=10, lr=3.0)
                                    for s in (False, True))
        assert_same(dense, sparse, "float32")


@pytest.mark.skipif(not os.path.isdir(MNIST), reason="the MNIST test digits are not in ../shared")
def test_real_mnist_digits():
    from fastbp.datasets import read_idx

    X = read_idx(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz")).reshape(10000, -1)[:500]
    y = read_idx(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))[:500]
    assert 0.15 < density(X) < 0.25
    for threads in (1, 2):
        (dense, _), (sparse, hs) = (train(X, y, [784, 30, 10], s, threads=threads, batch_size=10, lr=3.0)
                                    for s in (False, True))
        assert hs["engine"] == ("numba-sparse-2t" if threads == 2 and nb.TWO_THREADS_SUPPORTED else "numba-sparse-1t")
        assert_same(dense, sparse, "float32")


# --- the nonzero structure -----------------------------------------------------------------------
def test_the_rows_hold_each_samples_nonzeros_in_less_memory_than_the_dense_uint8_data():
    X, _ = random_sparse(n=300, d=300, fraction=0.19)
    rows = SparseRows.from_array(X, np.float32)
    assert rows.indices.dtype == np.uint16 and rows.values.dtype == np.uint8
    assert rows.shape == X.shape and rows.nnz == np.count_nonzero(X)
    assert rows.density == pytest.approx(np.count_nonzero(X) / X.size)
    for r in (0, 3, 299):
        cols = rows.indices[rows.indptr[r]:rows.indptr[r + 1]]
        np.testing.assert_array_equal(cols, np.nonzero(X[r])[0])
        np.testing.assert_array_equal(rows.values[rows.indptr[r]:rows.indptr[r + 1]], X[r][cols])
    assert rows.nbytes < X.nbytes == rows.dense_nbytes
    floats = SparseRows.from_array(X / 255.0, np.float32)
    assert floats.values.dtype == np.float32 and floats.nnz == rows.nnz


def test_rows_from_scipy_formats_match_the_dense_conversion():
    X, _ = random_sparse(n=50, d=30)
    ref = SparseRows.from_array(X, np.float64)
    unsorted = sp.csr_matrix(X)
    unsorted.indices = unsorted.indices.copy()
    for r in range(unsorted.shape[0]):  # reverse each row's entries: indices no longer sorted
        a, b = unsorted.indptr[r], unsorted.indptr[r + 1]
        unsorted.indices[a:b] = unsorted.indices[a:b][::-1].copy()
        unsorted.data[a:b] = unsorted.data[a:b][::-1].copy()
    unsorted.has_sorted_indices = False
    for M in (sp.csr_matrix(X), sp.csc_matrix(X), sp.coo_matrix(X), sp.csr_array(X), unsorted):
        rows = SparseRows.from_scipy(M, np.float64)
        np.testing.assert_array_equal(rows.indptr, ref.indptr)
        np.testing.assert_array_equal(rows.indices, ref.indices)
        np.testing.assert_array_equal(rows.values, ref.values)
    wide = SparseRows.from_scipy(sp.csr_matrix((np.ones(1), ([0], [70000])), shape=(1, 70001)), np.float32)
    assert wide.indices.dtype == np.int32 and wide.indices[0] == 70000


@pytest.mark.parametrize("kind", ["uint8", "uint8 words", "float32", "float64", "strided", "empty rows", "wide"])
def test_the_compiled_collection_of_nonzeros_equals_numpys(kind):
    """``_nb_sparse.sparse_rows`` (what a sparse fit collects its rows with) gives SparseRows.of's
    arrays exactly: uint8 kept, floats in the engine's dtype, any layout, rows of zeros."""
    X, _ = random_sparse(n=60, d=70, fraction=0.2)
    dtype = np.float32
    if kind == "float32":
        X = X / np.float32(255)
    elif kind == "float64":
        X, dtype = X / 255.0, np.float64
    elif kind == "strided":
        X = np.asfortranarray(X)[:, ::-1]
    elif kind == "empty rows":
        X[::3] = 0
        X[-1] = 0
    elif kind == "wide":
        X = np.zeros((3, 70001), np.uint8)
        X[1, [0, 5, 70000]] = (1, 2, 3)
    elif kind == "uint8 words":  # rows of whole 8-byte words (skipped where zero), as MNIST's 784
        X, _ = random_sparse(n=60, d=72, fraction=0.2)
        X[:, 8:24] = 0
        X[5, :] = 0
        X[7, :] = 0
        X[7, [7, 8, 71]] = (1, 2, 3)  # the last entry of a word, the first of the next, the last of the row
    ref, got = SparseRows.of(X, dtype), nb.KS.sparse_rows(X, dtype)
    for name in ("indptr", "indices", "values"):
        a, b = getattr(ref, name), getattr(got, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(b, a, err_msg=name)
    assert got.shape == ref.shape and got.nnz == np.count_nonzero(X)


def test_the_split_halves_the_nonzeros():
    X, _ = random_sparse(n=200, d=40)
    rows = SparseRows.from_array(X, np.float32)
    s = rows.split()
    below = np.count_nonzero(X[:, :s])
    assert abs(below - rows.nnz / 2) <= np.count_nonzero(X[:, s - 1])


# --- choosing the engine ---------------------------------------------------------------------------
def test_auto_chooses_by_the_training_sets_density_and_the_history_reports_it():
    sparse_X, y = random_sparse(fraction=0.1)
    dense_X = sparse_X.copy()
    dense_X[dense_X == 0] = 7
    auto = fb.get_backend("numba")
    h = fb.Network.from_sizes([40, 5, 3], backend=auto, seed=0).fit(sparse_X, y)
    assert h["engine"] == "numba-sparse-1t" and h["input"]["layout"] == "sparse"
    assert h["input"]["density"] == pytest.approx(density(sparse_X)) and h["input"]["nbytes"] < h["input"]["dense_nbytes"]
    h = fb.Network.from_sizes([40, 5, 3], backend=auto, seed=0).fit(dense_X, y)
    assert h["engine"] == "numba-fused-1t" and h["input"] == {"layout": "dense", "nbytes": dense_X.nbytes}
    assert fb.Network.from_sizes([40, 5, 3], backend=fb.get_backend("numba", sparse=True)).fit(dense_X, y)[
        "engine"] == "numba-sparse-1t"
    assert fb.Network.from_sizes([40, 5, 3], backend=fb.get_backend("numba", sparse=False)).fit(sparse_X, y)[
        "engine"] == "numba-fused-1t"
    at = np.zeros((100, 40), np.uint8)
    at[:, :int(40 * nb.SPARSE_DENSITY)] = 1  # exactly the threshold: sparse
    assert auto.use_sparse(at) and not auto.use_sparse(np.ones((100, 40), np.uint8))


@pytest.mark.parametrize("value", ["yes", 1, None, "sparse"])
def test_the_sparse_argument_is_checked(value):
    with pytest.raises(ValueError, match="sparse: expected 'auto', True or False"):
        fb.get_backend("numba", sparse=value)


# --- scipy.sparse input: straight into the engine ----------------------------------------------------
@pytest.fixture
def no_densifying(monkeypatch):
    def refuse(self, *a, **k):
        raise AssertionError("the sparse input was densified")

    for cls in (sp.csr_matrix, sp.csc_matrix, sp.csr_array):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)


def test_scipy_sparse_fit_predict_and_evaluate_are_never_densified(no_densifying):
    X, y = random_sparse(n=120)
    ref = fb.Network.from_sizes([40, 9, 3], backend=fb.get_backend("numba", dtype="float64"), seed=0)
    ref.fit(X, y, epochs=2)
    for container in (sp.csr_matrix, sp.csc_matrix, sp.csr_array):
        for threads in (1, 2):
            net = fb.Network.from_sizes([40, 9, 3], backend=fb.get_backend("numba", dtype="float64", threads=threads),
                                        seed=0)
            h = net.fit(container(X), y, epochs=2)
            assert h["engine"].startswith("numba-sparse-")
            assert_same([net.get_params()], [ref.get_params()], "float64")
            np.testing.assert_allclose(net.predict_proba(container(X)), ref.predict_proba(X), rtol=1e-9, atol=1e-12)
            assert net.evaluate(container(X), y) == pytest.approx(ref.evaluate(X, y), rel=1e-9)
    weighted = fb.Network.from_sizes([40, 9, 3], backend=fb.get_backend("numba", dtype="float64"), seed=0)
    h = weighted.fit(sp.csr_matrix(X), y, epochs=2, sample_weight=np.ones(len(y)))  # the per-batch loop, sparse batches
    assert h["input"]["layout"] == "scipy.sparse"
    assert_same([weighted.get_params()], [ref.get_params()], "float64")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_scipy_sparse_input_is_checked_like_dense_input(backend):
    net = fb.Network.from_sizes([40, 5, 3], backend=backend)
    X, y = random_sparse()
    bad = sp.csr_matrix(X / 255.0)
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="X: contains NaN or infinite values"):
        net.fit(bad, y)
    with pytest.raises(ValueError, match="X: expected 40 features"):
        net.fit(sp.csr_matrix(X[:, :30]), y)
    with pytest.raises(ValueError, match="at least one sample"):
        net.predict(sp.csr_matrix((0, 40)))
    assert net.fit(sp.csr_matrix(X), y)["input"]["layout"] == ("sparse" if backend == "numba" else "scipy.sparse")


def test_the_sklearn_estimators_train_sparse_input_with_the_sparse_engine(no_densifying):
    from fastbp.sklearn import MLPClassifier

    X, y = random_sparse(n=150)
    X = X / 255.0
    kw = dict(hidden_layer_sizes=(9,), max_iter=3, random_state=0, backend="numba", dtype="float64")
    dense = MLPClassifier(**kw).fit(X, y)
    for solver in ("adam", "sgd"):
        est = MLPClassifier(solver=solver, **kw)
        est.fit(sp.csr_matrix(X), y)
        ref = MLPClassifier(solver=solver, **kw).fit(X, y) if solver != "adam" else dense
        np.testing.assert_allclose(est.coefs_[0], ref.coefs_[0], rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(est.predict_proba(sp.csr_matrix(X)), ref.predict_proba(X), rtol=1e-8, atol=1e-11)


def test_epochs_outside_a_fit_do_not_scan_the_data_each_time_under_auto(monkeypatch):
    """Network.run_epoch (the book's compat loop) makes a plan per call: "auto" keeps dense X dense
    there (no nonzeros collected per epoch); sparse=True trains sparsely, as the dense engine does."""
    from fastbp.kernels import numba_backend

    X, y = random_sparse()
    Y = np.eye(3)[y]
    calls = []
    real = numba_backend.KS.sparse_rows  # (what the backend collects the nonzeros with)
    monkeypatch.setattr(numba_backend.KS, "sparse_rows", lambda *a: calls.append(1) or real(*a))
    params = []
    for sparse in ("auto", True):
        be = fb.get_backend("numba", dtype="float64", sparse=sparse)
        net = fb.Network.from_sizes([40, 9, 3], backend=be, seed=0)
        opt = fb.SGD(0.5)
        for epoch in range(2):
            net.run_epoch(be.prepare_data(X), 1 / 255, be.asarray(Y), np.arange(len(X)), 10, opt)
        params.append(net.get_params())
        assert len(calls) == (0 if sparse == "auto" else 2)
    assert_same([params[0]], [params[1]], "float64")


@pytest.mark.parametrize("sparse,nonzero", [(True, 0.2), ("auto", 0.6)])
def test_a_fit_with_a_callback_makes_its_inputs_once_and_sees_the_callbacks_changes(monkeypatch, sparse, nonzero):
    """A callback may change the layers, so the plan is made again after it, from the layers; what
    the plan made from the data (the nonzero rows, the density scan) is not made again."""
    rng = np.random.default_rng(0)
    X = ((rng.random((120, 40)) < nonzero) * rng.integers(1, 256, (120, 40))).astype(np.uint8)
    y = rng.integers(0, 3, 120)
    made, scans = [], []
    of, scan = nb.KS.sparse_rows, nb.density
    monkeypatch.setattr(nb.KS, "sparse_rows", lambda *a: made.append(1) or of(*a))
    monkeypatch.setattr(nb, "density", lambda *a, **k: scans.append(1) or scan(*a, **k))
    net = fb.Network.from_sizes([40, 6, 3], backend=fb.get_backend("numba", sparse=sparse), seed=0)

    def halve_weights(epoch, history):
        params = net.get_params()
        params[0]["W"] = params[0]["W"] * 0.5
        net.set_params(params)

    h = net.fit(X, y, epochs=3, batch_size=10, lr=0.5, callback=halve_weights)
    auto = sparse == "auto"  # (auto scans the density, finds the data dense)
    assert h["engine"] == ("numba-fused-1t" if auto else "numba-sparse-1t")
    assert len(made) == (0 if auto else 1) and len(scans) == (1 if auto else 0)
    ref = fb.Network.from_sizes([40, 6, 3], backend="numpy", seed=0)  # the callback's changes took effect

    def halve_ref(epoch, history):
        params = ref.get_params()
        params[0]["W"] = params[0]["W"] * 0.5
        ref.set_params(params)

    ref.fit(X, y, epochs=3, batch_size=10, lr=0.5, callback=halve_ref)
    np.testing.assert_allclose(net.get_params()[0]["W"], ref.get_params()[0]["W"], rtol=1e-4, atol=1e-5)


def test_auto_estimates_the_density_of_a_large_dense_set_from_rows_spread_over_it():
    # a set whose first half is dense and second half empty: rows from the start alone would say
    # "dense", rows spread over it find half of it nonzero, within a percent of the exact count
    rng = np.random.default_rng(0)
    X = np.zeros((20000, 50), np.uint8)
    X[:10000] = rng.integers(1, 256, (10000, 50))
    X[10000:, :10] = 1
    exact = np.count_nonzero(X) / X.size
    estimate = nb.density(X, max_rows=4096)
    assert abs(estimate - exact) < 0.01 and exact == pytest.approx(0.6)
    assert nb.density(X[:100], max_rows=4096) == np.count_nonzero(X[:100]) / X[:100].size  # small: exact
