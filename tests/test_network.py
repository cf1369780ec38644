"""The network, its layers and the NumPy reference backend."""
import importlib.util
import math
import os

import numpy as np
import pytest

import fastbp as fb


def tiny_net(sizes=(4, 3, 2), act="sigmoid", out=None, loss="quadratic", dtype="float64", seed=0, **kw):
    return fb.Network.from_sizes(list(sizes), activation=act, output_activation=out, loss=loss,
                                 backend="numpy", dtype=dtype, seed=seed, **kw)


def data(n=12, n_in=4, n_out=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), rng.integers(0, n_out, n)


# --- the maths ----------------------------------------------------------------------------
def test_one_update_matches_hand_computation():
    """A 2-2-1 sigmoid net, quadratic loss, one sample, one step, computed with scalars by hand."""
    w1 = [[0.1, -0.2], [0.3, 0.4]]  # w1[i][j]: input i -> hidden j
    b1 = [0.05, -0.05]
    w2 = [0.6, -0.7]
    b2 = 0.2
    x, t, lr = [0.5, -1.0], 1.0, 0.5
    s = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    h = [s(x[0] * w1[0][j] + x[1] * w1[1][j] + b1[j]) for j in range(2)]
    o = s(h[0] * w2[0] + h[1] * w2[1] + b2)
    d_out = (o - t) * o * (1 - o)
    d_hid = [d_out * w2[j] * h[j] * (1 - h[j]) for j in range(2)]
    new_w2 = [w2[j] - lr * d_out * h[j] for j in range(2)]
    new_w1 = [[w1[i][j] - lr * d_hid[j] * x[i] for j in range(2)] for i in range(2)]
    new_b1 = [b1[j] - lr * d_hid[j] for j in range(2)]

    net = fb.Network([fb.Dense(2, 2, "sigmoid", init=np.array(w1), bias_init=np.array(b1)),
                      fb.Dense(2, 1, "sigmoid", init=np.array(w2).reshape(2, 1), bias_init=b2)],
                     backend="numpy", dtype="float64")
    assert net.evaluate([x], [[t]])["loss"] == pytest.approx(0.5 * (o - t) ** 2, rel=1e-12)
    net.fit([x], [[t]], epochs=1, batch_size=1, lr=lr)
    p = net.get_params()
    np.testing.assert_allclose(p[1]["W"][:, 0], new_w2, rtol=1e-12)
    np.testing.assert_allclose(p[0]["W"], new_w1, rtol=1e-12)
    np.testing.assert_allclose(p[0]["b"], new_b1, rtol=1e-12)


VALID = [(out, loss) for out in fb.kernels.ACTIVATIONS for loss in fb.kernels.LOSSES
         if fb.kernels.pairs_with(out, loss)]


@pytest.mark.parametrize("out,loss", VALID)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gradients_match_finite_differences(out, loss, depth):
    hidden = {1: "sigmoid", 2: "tanh", 3: "leaky_relu"}[depth]
    sizes = [5, 4, 3, 3][: depth] + [3]
    net = tiny_net(sizes, act=hidden, out=out, loss=loss, seed=depth)
    rng = np.random.default_rng(depth)
    X = rng.normal(size=(6, 5))
    Y = rng.uniform(0.05, 0.95, size=(6, 3)) if loss in ("quadratic", "mse") else np.eye(3)[rng.integers(0, 3, 6)]
    result = fb.gradcheck(net, X, Y)
    assert len(result.errors) == depth
    assert result.worst < 1e-5, str(result)


@pytest.mark.parametrize("act", ["relu", "identity", "tanh", "sigmoid"])
def test_hidden_activations_gradcheck(act):
    # biases drawn N(0, 1) so that no relu input sits exactly on its kink at 0
    net = tiny_net((3, 5, 4, 2), act=act, out="softmax", loss="cross_entropy", init="normal")
    X, y = data(8, 3, 2, seed=4)
    assert fb.gradcheck(net, X, y).worst < 1e-5


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    net = tiny_net()
    X, y = data()
    original = net.backend.backward

    def wrong(x, W, delta, need_dx=True):
        dW, db, dx = original(x, W, delta, need_dx)
        return dW * 1.1, db, dx

    monkeypatch.setattr(net.backend, "backward", wrong)
    assert fb.gradcheck(net, X, y).worst > 1e-3


def test_sigmoid_is_stable_for_large_inputs():
    z = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = fb.sigmoid(z)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, [0, 1 / (1 + math.exp(50)), 0.5, 1 / (1 + math.exp(-50)), 1], atol=1e-30)


def test_softmax_cross_entropy_is_finite_for_extreme_logits():
    net = fb.Network([fb.Dense(2, 3, "softmax", init=np.array([[500.0, -500, 0], [0, 0, 0]]))],
                     loss="cross_entropy", backend="numpy", dtype="float64")
    scores = net.evaluate([[1.0, 0.0], [1.0, 0.0]], [0, 1])
    assert np.isfinite(scores["loss"]) and scores["accuracy"] == 0.5


# --- the optimiser ------------------------------------------------------------------------
def manual_step(net, X, Y, lr, momentum=0.0, wd=0.0, velocity=None):
    """Parameters after one full-batch step, from net.gradients (mean gradients)."""
    grads = net.gradients(X, Y)
    params = net.get_params()
    velocity = velocity or [{k: np.zeros_like(v) for k, v in p.items()} for p in params]
    for p, g, v in zip(params, grads, velocity):
        for k in p:
            u = lr * g[k] + (lr * wd * p[k] if k == "W" else 0)
            v[k] = momentum * v[k] - u
            p[k] = p[k] + v[k]
    return params, velocity


def test_full_batch_momentum_and_weight_decay_match_manual_steps():
    X, y = data(10)
    net = tiny_net()
    ref = tiny_net()
    velocity = None
    for _ in range(3):
        expected, velocity = manual_step(ref, X, y, lr=0.3, momentum=0.9, wd=0.01, velocity=velocity)
        ref.set_params(expected)
        net.fit(X, y, epochs=1, batch_size=None, lr=0.3, momentum=0.9, weight_decay=0.01)
    for p, e in zip(net.get_params(), ref.get_params()):
        np.testing.assert_allclose(p["W"], e["W"], rtol=1e-12)
        np.testing.assert_allclose(p["b"], e["b"], rtol=1e-12)


def test_sum_reduction_is_lr_times_batch():
    X, y = data(10)
    a, b = tiny_net(), tiny_net()
    a.fit(X, y, batch_size=5, lr=0.1, optimizer=fb.SGD(lr=0.5, reduction="sum"), shuffle=False)
    b.fit(X, y, batch_size=5, lr=2.5, shuffle=False)
    for p, q in zip(a.get_params(), b.get_params()):
        np.testing.assert_allclose(p["W"], q["W"], rtol=1e-12)


def test_frozen_bias_stays_fixed():
    net = fb.Network([fb.Dense(4, 3, bias_init=0.35, frozen=("b",)), fb.Dense(3, 2)],
                     backend="numpy", dtype="float64", seed=0)
    X, y = data()
    before = net.get_params()
    net.fit(X, y, epochs=2, lr=1.0)
    after = net.get_params()
    np.testing.assert_array_equal(after[0]["b"], np.full(3, 0.35))
    assert not np.allclose(after[0]["W"], before[0]["W"])
    assert not np.allclose(after[1]["b"], before[1]["b"])


def test_sgd_step_minimises_a_user_function():
    p = np.array([3.0, -2.0])
    opt = fb.SGD(lr=0.1, momentum=0.5)
    for _ in range(200):
        opt.step([p], [2 * (p - np.array([1.0, 1.0]))])  # gradient of |p - (1,1)|^2
    np.testing.assert_allclose(p, [1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba not installed"))])
def test_sgd_step_starts_fresh_velocities_for_new_parameters(backend):
    """The momentum buffers belong to the parameters they were made for: a step on other
    parameters (here the same count, other shapes) starts from zero velocity, as a new SGD would."""
    opt, fresh = fb.SGD(lr=0.1, momentum=0.9), fb.SGD(lr=0.1, momentum=0.9)
    a = np.ones(3)
    for _ in range(3):
        opt.step([a], [a.copy()], backend=backend)
    p, q = np.full((2, 4), 2.0), np.full((2, 4), 2.0)
    g = np.arange(8.0).reshape(2, 4)
    opt.step([p], [g], backend=backend)
    fresh.step([q], [g], backend=backend)
    np.testing.assert_array_equal(p, q)
    opt.step([p], [g], backend=backend)
    fresh.step([q], [g], backend=backend)
    np.testing.assert_array_equal(p, q)


# --- training -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return fb.datasets.load_digits()


def test_trains_digits_to_high_accuracy(digits):
    net = fb.Network.from_sizes([64, 30, 10], backend="numpy", seed=0)
    history = net.fit(digits.X_train, digits.y_train, epochs=15, batch_size=10, lr=3.0,
                      validation_data=(digits.X_test, digits.y_test))
    assert history.val_accuracy[-1] >= 0.9
    assert net.evaluate(digits.X_test, digits.y_test)["accuracy"] == history.val_accuracy[-1]
    assert len(history.loss) == len(history.seconds) == 15
    assert history.loss[-1] < history.loss[0]
    assert (net.predict(digits.X_test) == net.predict_proba(digits.X_test).argmax(1)).all()


def test_same_seed_same_weights_and_fit_continues():
    X, y = data(30)
    a, b = tiny_net(dtype="float32", seed=7), tiny_net(dtype="float32", seed=7)
    a.fit(X, y, epochs=3, batch_size=4, lr=1.0)
    b.fit(X, y, epochs=2, batch_size=4, lr=1.0)
    assert not np.array_equal(a.get_params()[0]["W"], b.get_params()[0]["W"])
    b.fit(X, y, epochs=1, batch_size=4, lr=1.0)  # continues from the current weights and rng
    for p, q in zip(a.get_params(), b.get_params()):
        np.testing.assert_array_equal(p["W"], q["W"])
    assert a.get_params()[0]["W"].dtype == np.float32


def test_float_targets_and_single_output():
    X, _ = data(20, 4)
    t = (X[:, 0] > 0).astype(float)
    net = tiny_net((4, 6, 1), loss="binary_cross_entropy")
    h = net.fit(X, t, epochs=200, batch_size=None, lr=2.0)
    assert h.loss[-1] < h.loss[0]
    assert set(np.unique(net.predict(X))) <= {0, 1}
    assert net.evaluate(X, t)["accuracy"] >= 0.9


def test_callback_can_stop_training():
    X, y = data()
    seen = []
    h = tiny_net().fit(X, y, epochs=10, callback=lambda epoch, hist: seen.append(epoch) or epoch == 2)
    assert seen == [0, 1, 2] and len(h.loss) == 3


def test_progress_bar_runs(capsys):
    X, y = data()
    tiny_net().fit(X, y, epochs=2, progress=True, validation_data=(X, y))
    assert "epoch" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings on the way to NaN
def test_divergence_stops_with_the_epoch_named():
    X, y = data(20)
    net = tiny_net(act="identity", out="identity", loss="quadratic")
    with pytest.raises(fb.DivergenceError, match=r"epoch \d+"):
        net.fit(X * 1e3, y, epochs=50, batch_size=None, lr=1e3)


# --- persistence --------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    net = fb.Network([fb.Dense(4, 3, ("leaky_relu", 0.2), frozen="b"), fb.Dense(3, 2, "softmax")],
                     loss="cross_entropy", backend="numpy", seed=3)
    path = tmp_path / "m.npz"
    net.save(path)
    back = fb.Network.load(path, backend="numpy")
    X, _ = data()
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))
    assert back.loss == "cross_entropy" and back.layers[0].activation.slope == 0.2
    assert back.layers[0].frozen == {"b"} and back.dtype == np.float32
    assert os.listdir(tmp_path) == ["m.npz"]


def test_load_rejects_a_corrupt_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a fastbp network file"):
        fb.Network.load(bad)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    net = tiny_net()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        net.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# --- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.5), TypeError, "batch_size"),
    (dict(lr=0), ValueError, "lr"),
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(momentum=1.0), ValueError, "momentum"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(validation_data=[1, 2, 3]), TypeError, "validation_data"),
    (dict(callback=3), TypeError, "callback"),
])
def test_fit_rejects_bad_arguments(kwargs, exc, match):
    X, y = data()
    with pytest.raises(exc, match=match):
        tiny_net().fit(X, y, **kwargs)


@pytest.mark.parametrize("X,y,match", [
    (np.zeros((12, 5)), np.zeros(12, int), r"X: expected 4 features"),
    (np.zeros(12), np.zeros(12, int), r"X: expected a 2-D array"),
    (np.zeros((0, 4)), np.zeros(0, int), r"X: expected at least one sample"),
    (np.full((12, 4), np.nan), np.zeros(12, int), r"X: contains NaN"),
    (np.zeros((12, 4)), np.zeros(11, int), r"y: expected 12 rows"),
    (np.zeros((12, 4)), np.full(12, 2), r"y: labels must be in 0\.\.1"),
    (np.zeros((12, 4)), np.full(12, -1), r"y: labels must be in 0\.\.1"),
    (np.zeros((12, 4)), np.full(12, 0.5), r"y: expected integer class labels"),
    (np.zeros((12, 4)), np.zeros((12, 3)), r"y: expected 2 target columns"),
    (np.zeros((12, 4)), np.full((12, 2), np.inf), r"y: contains NaN"),
])
def test_fit_rejects_bad_data(X, y, match):
    with pytest.raises(ValueError, match=match):
        tiny_net().fit(X, y)


def test_fit_rejects_non_numeric_data():
    with pytest.raises(TypeError, match="X: expected a numeric array"):
        tiny_net().fit(np.array([["a"] * 4] * 3), [0, 1, 0])


@pytest.mark.parametrize("build,exc,match", [
    (lambda: fb.Dense(3, 2, "swish"), ValueError, "activation: expected one of"),
    (lambda: fb.Dense(0, 2), ValueError, "n_in"),
    (lambda: fb.Dense(3, 2, init="uniform"), ValueError, "init: expected one of"),
    (lambda: fb.Dense(3, 2, frozen=("w",)), ValueError, "frozen"),
    (lambda: fb.Network([fb.Dense(3, 2, init=np.zeros((2, 3)))], backend="numpy"), ValueError,
     r"init: expected shape \(3, 2\)"),
    (lambda: fb.Network([fb.Dense(3, 2)], loss="hinge"), ValueError, "loss: expected one of"),
    (lambda: fb.Network([fb.Dense(3, 2)], backend="tpu"), ValueError, "backend: expected one of"),
    (lambda: fb.Network([fb.Dense(3, 2)], backend="numpy", dtype="float16"), ValueError, "dtype"),
    (lambda: fb.Network([fb.Dense(3, 2), fb.Dense(3, 2)]), ValueError, "layer 0 has 2 outputs"),
    (lambda: fb.Network([fb.Dense(3, 2, "softmax"), fb.Dense(2, 2)]), ValueError, "softmax is for the output"),
    (lambda: fb.Network([fb.Dense(3, 2, "relu")], loss="cross_entropy"), ValueError, "needs a softmax output layer"),
    (lambda: fb.Network([fb.Dense(3, 2, "sigmoid")], loss="cross_entropy"), ValueError,
     "'cross_entropy' needs a softmax output layer, got 'sigmoid'; for sigmoid outputs use 'binary_cross_entropy'"),
    (lambda: fb.Network([fb.Dense(3, 2, "relu")], loss="binary_cross_entropy"), ValueError,
     "needs a sigmoid or softmax output layer"),
    (lambda: fb.Network([]), TypeError, "layers"),
    (lambda: fb.Network.from_sizes([3]), ValueError, "sizes"),
])
def test_construction_errors(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_mixing_a_cupy_like_array_into_numpy_backend_is_an_error():
    be = fb.get_backend("numpy")
    FakeCupy = type("ndarray", (), {"__module__": "cupy._core.core"})
    with pytest.raises(TypeError, match="CuPy array on the 'numpy' backend"):
        be.asarray(FakeCupy())


def test_setting_parameters_keeps_momentum_and_gradcheck_leaves_it_alone():
    X, y = np.random.default_rng(0).normal(size=(60, 4)), np.random.default_rng(1).integers(0, 3, 60)
    net = fb.Network.from_sizes([4, 5, 3], backend="numpy", dtype="float64", seed=0)
    net.fit(X, y, epochs=2, batch_size=10, optimizer=fb.SGD(0.5, momentum=0.9))
    opt = net.optimizer
    before = {k: v.copy() for k, v in opt.layer_state(net.layers[0]).items()}
    assert set(before) == {"W", "b"} and np.abs(before["W"]).max() > 0
    fb.gradcheck(net, X[:5], y[:5], max_checks=3)
    net.set_params(net.get_params())
    for k, v in before.items():
        np.testing.assert_array_equal(opt.state_of(net.layers[0], k), v)
    # a new shape drops them: the velocities of other shapes cannot apply
    layer = net.layers[0]
    layer.set_params(net.backend, np.zeros((4, 3)), np.zeros(3))
    assert opt.state_of(layer, "W", create=False) is None
    np.testing.assert_array_equal(opt.state_of(layer, "W"), np.zeros((1, 4, 3)))  # made afresh


def test_the_optimizer_owns_its_state_and_fit_goes_on_from_the_previous_one():
    X, y = np.random.default_rng(0).normal(size=(40, 4)), np.random.default_rng(1).integers(0, 3, 40)
    net = fb.Network.from_sizes([4, 5, 3], backend="numpy", dtype="float64", seed=0)
    assert net.optimizer is None
    opt = fb.SGD(0.5, momentum=0.9)
    net.fit(X, y, epochs=1, optimizer=opt)
    assert net.optimizer is opt
    v = {k: s.copy() for k, s in opt.layer_state(net.layers[1]).items()}
    assert set(v) == {"W", "b"} and v["W"].shape == (1, 5, 3) and np.abs(v["W"]).max() > 0
    # fit without an optimiser: a new SGD that goes on from the last one's velocities, as one fit would
    a, b = fb.Network.from_sizes([4, 5, 3], backend="numpy", dtype="float64", seed=0), None
    a.fit(X, y, epochs=2, lr=0.5, momentum=0.9, shuffle=False)
    b = fb.Network.from_sizes([4, 5, 3], backend="numpy", dtype="float64", seed=0)
    b.fit(X, y, epochs=1, lr=0.5, momentum=0.9, shuffle=False)
    first = b.optimizer
    b.fit(X, y, epochs=1, lr=0.5, momentum=0.9, shuffle=False)
    assert b.optimizer is not first
    for p, q in zip(a.get_params(), b.get_params()):
        np.testing.assert_allclose(p["W"], q["W"], rtol=1e-12)
    # a fresh optimiser passed in starts from zero velocity: not the same as going on
    c = fb.Network.from_sizes([4, 5, 3], backend="numpy", dtype="float64", seed=0)
    c.fit(X, y, epochs=1, lr=0.5, momentum=0.9, shuffle=False)
    c.fit(X, y, epochs=1, optimizer=fb.SGD(0.5, momentum=0.9), shuffle=False)
    assert not np.allclose(c.get_params()[0]["W"], b.get_params()[0]["W"])
    with pytest.raises(TypeError, match="optimizer: expected a fastbp optimiser"):
        net.fit(X, y, optimizer="adam")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_gather_of_consecutive_rows_is_the_same_batch_without_copying_what_needs_no_conversion(backend):
    """Consecutive rows (predict's and evaluate's chunks) come as a view of X when neither the
    dtype nor a scale needs a copy, with the values of the indexed gather, and never change X."""
    be = fb.get_backend(backend, dtype="float32")
    rng = np.random.default_rng(0)
    X8 = rng.integers(0, 256, (50, 12)).astype(np.uint8)
    X32 = rng.normal(size=(50, 12)).astype(np.float32)
    X64 = rng.normal(size=(50, 12))
    for X, scale in ((X8, 1 / 255), (X32, 1.0), (X32, 0.5), (X64, 1.0), (np.asfortranarray(X32), 1.0)):
        before = X.copy()
        for idx in (np.arange(7, 19), np.arange(0, 50), np.array([3]), np.array([4, 5, 7]), np.array([9, 8, 7])):
            got = be.gather(X, idx, scale)
            want = (X[idx].astype(np.float32) * np.float32(scale)) if scale != 1 else X[idx].astype(np.float32)
            assert got.dtype == np.float32 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(X, before)  # scaling never wrote into the caller's array
    view = be.gather(X32, np.arange(10, 20), 1.0)
    assert np.shares_memory(view, X32)  # float32 rows, no scale: no copy
    assert not np.shares_memory(be.gather(X32, np.arange(10, 20), 0.5), X32)
    net = fb.Network.from_sizes([12, 5, 3], backend=be, seed=0)
    np.testing.assert_allclose(net.predict_proba(X32), net.predict_proba(X32.copy(order="F")), rtol=1e-6)
