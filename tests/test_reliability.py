"""Failures a hostile user found (issue 11): divergence, the cross-entropy clip, bad pairings,
NaN parameters, complex inputs, bad seeds, damaged network files. Each test failed before its fix."""
import json
import os
import zipfile

import numpy as np
import pytest

import fastbp as fb
from fastbp.kernels import LOSS_CLIP

BACKENDS = ["numpy", "numba"]


def digits_like(n=300, n_in=64, seed=0):
    """Pixel-like data 0..255 (uint8) with labels that depend on it."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, n_in), dtype=np.uint8)
    y = (X[:, :10].argmax(axis=1)).astype(np.int64)
    return X, y


# --- divergence: the network is put back to its last finite weights --------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings, expected
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_divergence_restores_the_last_finite_weights_and_momentum(backend, momentum):
    X, y = digits_like()
    net = fb.Network.from_sizes([64, 20, 10], activation="relu", output_activation="identity",
                                backend=backend, seed=0)
    net.fit(X, y, epochs=2, lr=0.1, momentum=momentum)
    before = net.get_params()
    saved = net.optimizer.snapshot(net.layers)
    velocity = saved["layers"]
    assert momentum == 0 or all(set(v) == {"W", "b"} for v in velocity)
    accuracy = net.evaluate(X, y)["accuracy"]
    with pytest.raises(fb.DivergenceError, match="put back to its weights at the start of this fit") as info:
        net.fit(X.astype(float), y, epochs=2, lr=3.0 if momentum == 0 else 30.0, momentum=momentum)  # unscaled 0..255
    assert len(info.value.history["loss"]) == 1
    for p, q in zip(before, net.get_params()):
        np.testing.assert_array_equal(p["W"], q["W"])
        np.testing.assert_array_equal(p["b"], q["b"])
    assert net.optimizer.t == saved["t"] > 0  # the update count put back too
    for v, layer in zip(velocity, net.layers):  # the new fit's optimiser went on from the old one's state
        state = net.optimizer.layer_state(layer)
        assert set(v) == set(state)
        for k in v:
            np.testing.assert_array_equal(v[k], state[k])
    assert net.evaluate(X, y)["accuracy"] == accuracy  # usable, as before: not "class 0 for everything"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_in_a_later_epoch_keeps_the_epochs_before_it(backend):
    X, y = digits_like()
    net = fb.Network.from_sizes([64, 20, 10], activation="relu", output_activation="identity",
                                backend=backend, seed=0)
    opt = fb.SGD(0.001)
    snapshots = []

    def raise_the_rate(epoch, history):
        snapshots.append(net.get_params())
        if epoch == 1:
            opt.lr = 100.0  # epoch 3 diverges
    with pytest.raises(fb.DivergenceError, match="in epoch 3.*weights after epoch 2") as info:
        net.fit(X.astype(float), y, epochs=5, optimizer=opt, callback=raise_the_rate)
    assert len(snapshots) == 2 and len(info.value.history["loss"]) == 3
    for p, q in zip(snapshots[-1], net.get_params()):
        np.testing.assert_array_equal(p["W"], q["W"])
        np.testing.assert_array_equal(p["b"], q["b"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::sklearn.exceptions.ConvergenceWarning")
def test_mlp_regressor_keeps_finite_weights_after_divergence():
    from fastbp.sklearn import MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 5))
    y = X @ rng.normal(size=5)
    est = MLPRegressor(hidden_layer_sizes=(8,), activation="relu", solver="sgd", max_iter=3, backend="numpy",
                       random_state=0).fit(X, y)
    est.set_params(warm_start=True, learning_rate_init=50.0)
    with pytest.raises(fb.DivergenceError):
        est.fit(X * 1e3, y * 1e3)
    assert np.isfinite(est.predict(X)).all()


# --- the cross-entropy clip in the array's own dtype; the backends agree --------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["binary_cross_entropy", "cross_entropy"])
def test_saturated_outputs_give_the_same_finite_loss_on_numpy_and_numba(dtype, loss):
    a = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0 - 1e-9], [1e-30, 1.0, 0.0]], dtype=dtype)
    y = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0]], dtype=dtype)
    values = [fb.get_backend(name, dtype).loss(a, y, loss) for name in ("numpy", "numba")]
    assert all(np.isfinite(values)), values
    np.testing.assert_allclose(values[0], values[1], rtol=1e-6 if dtype == "float32" else 1e-12)
    clip = LOSS_CLIP[dtype]
    assert np.dtype(dtype).type(1 - clip) < 1  # representable: the clip really clips
    # one wrong output saturated at 0: -log(clip)
    single = fb.get_backend("numpy", dtype).loss(np.array([[0.0]], dtype), np.array([[1.0]], dtype), loss)
    assert single == pytest.approx(-np.log(np.dtype(dtype).type(clip)), rel=1e-6)


def test_float32_binary_cross_entropy_on_saturated_sigmoids_trains_on_numpy():
    """lr 5 saturates the sigmoids: the loss stays finite and training goes on (it stopped with
    a false DivergenceError on the numpy backend, as 1 - 1e-12 rounded to 1 in float32)."""
    X, y = digits_like(200)
    for backend in BACKENDS:
        net = fb.Network.from_sizes([64, 20, 10], loss="binary_cross_entropy", backend=backend, seed=0)
        history = net.fit(X, y, epochs=3, lr=50.0)
        assert np.isfinite(history.loss).all(), backend


def test_cuda_sources_clip_with_the_same_constants():
    import re

    from fastbp.kernels import cupy_backend

    text = cupy_backend.math_preamble()  # the CUDA math section, its #defines rendered from kernels/ops.py
    found = {m.group(1): float(m.group(2)) for m in re.finditer(r"#define FB_CLIP_F(32|64) (\S+)", text)}
    assert found == {"32": LOSS_CLIP["float32"], "64": LOSS_CLIP["float64"]}


# --- bad pairings, NaN parameters, complex data, seeds ------------------------------------------
def test_cross_entropy_with_sigmoid_outputs_is_rejected():
    with pytest.raises(ValueError, match="'cross_entropy' needs a softmax output layer, got 'sigmoid'"):
        fb.Network.from_sizes([4, 3], activation="sigmoid", loss="cross_entropy")


@pytest.mark.parametrize("make,match", [
    (lambda: fb.Dense(3, 2, bias_init=float("nan")), "bias_init: contains NaN"),
    (lambda: fb.Dense(3, 2, bias_init=float("inf")), "bias_init: contains NaN"),
    (lambda: fb.Dense(3, 2, bias_init=np.array([0.0, np.nan])), "bias_init: contains NaN"),
    (lambda: fb.Dense(3, 2, init=np.full((3, 2), np.nan)), "init: contains NaN"),
    (lambda: fb.Dense(3, 2, bias_init=np.zeros(3)), r"bias_init: expected shape \(2,\)"),
])
def test_nan_or_inf_initial_parameters_are_rejected_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_explicit_initial_arrays_are_copied_not_trained_in_place():
    W = np.full((4, 2), 0.1)
    b = np.zeros(2)
    layer = fb.Dense(4, 2, init=W, bias_init=b)
    net = fb.Network([layer], backend="numpy", dtype="float64")
    net.fit(np.ones((5, 4)), [0, 1, 0, 1, 1], epochs=1)
    assert np.all(W == 0.1) and np.all(b == 0) and np.all(layer.init == 0.1)


@pytest.mark.parametrize("bad,match", [
    ({"W": np.full((3, 2), np.nan), "b": np.zeros(2)}, r"params\[1\]\['W'\]: contains NaN"),
    ({"W": np.zeros((3, 2)), "b": np.array([0.0, np.inf])}, r"params\[1\]\['b'\]: contains NaN"),
    ({"W": np.zeros((2, 3)), "b": np.zeros(2)}, r"params\[1\]\['W'\]: expected shape \(3, 2\)"),
    ({"b": np.zeros(2)}, r"params\[1\]: expected a dict with 'W' and 'b'"),
])
def test_set_params_rejects_bad_values_and_changes_nothing(bad, match):
    net = fb.Network.from_sizes([4, 3, 2], backend="numpy", seed=0)
    before = net.get_params()
    new_first = {"W": np.ones((4, 3)), "b": np.ones(3)}  # valid: must not be set either
    with pytest.raises(ValueError, match=match):
        net.set_params([new_first, bad])
    for p, q in zip(before, net.get_params()):
        np.testing.assert_array_equal(p["W"], q["W"])
        np.testing.assert_array_equal(p["b"], q["b"])


@pytest.mark.parametrize("where", ["fit", "predict", "evaluate", "targets"])
def test_complex_data_is_rejected(where):
    net = fb.Network.from_sizes([3, 2], backend="numpy", seed=0)
    X = np.ones((4, 3))
    y = np.array([0, 1, 0, 1])
    Xc = X + 1j
    with pytest.raises(TypeError, match="got complex values"):
        if where == "fit":
            net.fit(Xc, y)
        elif where == "predict":
            net.predict(Xc)
        elif where == "evaluate":
            net.evaluate(Xc, y)
        else:
            net.fit(X, np.ones((4, 2)) + 0j)


@pytest.mark.parametrize("seed,exc", [(-1, ValueError), ("abc", TypeError), (1.5, TypeError), (True, TypeError)])
def test_bad_seeds_name_the_argument(seed, exc):
    with pytest.raises(exc, match="seed: expected None or an integer >= 0"):
        fb.Network.from_sizes([3, 2], seed=seed)


def test_numpy_generators_and_big_seeds_are_accepted():
    a = fb.Network.from_sizes([3, 2], backend="numpy", seed=np.random.default_rng(5))
    b = fb.Network.from_sizes([3, 2], backend="numpy", seed=2 ** 70)
    assert a.get_params()[0]["W"].shape == b.get_params()[0]["W"].shape == (3, 2)


# --- damaged network files ----------------------------------------------------------------------
def _saved(tmp_path):
    net = fb.Network.from_sizes([4, 3, 2], backend="numpy", seed=0)
    path = tmp_path / "m.npz"
    net.save(path)
    return path


def _rewrite(path, change):
    """The archive with its members changed by ``change(dict of name -> bytes)``."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def _config(members, edit):
    import io

    arr = np.load(io.BytesIO(members["config.npy"]))
    config = json.loads(str(arr))
    edit(config)
    buf = io.BytesIO()
    np.save(buf, np.array(json.dumps(config)))
    members["config.npy"] = buf.getvalue()


def _damage(kind, path):
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bit-flipped":
        flipped = bytearray(data)
        for i in range(60, len(flipped) - 60, 7):
            flipped[i] ^= 0x10
        path.write_bytes(bytes(flipped))
    elif kind == "no-config":
        _rewrite(path, lambda m: m.pop("config.npy"))
    elif kind == "no-weights":
        _rewrite(path, lambda m: m.pop("W1.npy"))
    elif kind == "wrong-shape":
        _rewrite(path, lambda m: _config(m, lambda c: c["layers"][0].update(n_out=5)))
    elif kind == "no-layers":
        _rewrite(path, lambda m: _config(m, lambda c: c.pop("layers")))
    elif kind == "bad-loss":
        _rewrite(path, lambda m: _config(m, lambda c: c.update(loss="hinge")))
    elif kind == "bad-dtype":
        _rewrite(path, lambda m: _config(m, lambda c: c.update(dtype="int8")))
    elif kind == "nan-weights":
        import io

        def nan(m):
            buf = io.BytesIO()
            np.save(buf, np.full((4, 3), np.nan))
            m["W0.npy"] = buf.getvalue()
        _rewrite(path, nan)
    elif kind == "plain-npy":
        np.save(open(path, "wb"), np.zeros(3))


@pytest.mark.parametrize("kind", ["empty", "truncated", "bit-flipped", "no-config", "no-weights", "wrong-shape",
                                  "no-layers", "bad-loss", "bad-dtype", "nan-weights", "plain-npy"])
def test_loading_a_damaged_file_is_a_value_error_naming_the_path(tmp_path, kind):
    path = _saved(tmp_path)
    fb.Network.load(path)  # intact, it loads
    _damage(kind, path)
    with pytest.raises(ValueError) as info:
        fb.Network.load(path)
    assert str(path) in str(info.value) and "fastbp network file" in str(info.value)


def test_loading_with_a_bad_backend_argument_blames_the_argument_not_the_file(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(ValueError, match="^backend: expected one of"):
        fb.Network.load(path, backend="tpu")
    with pytest.raises(FileNotFoundError):
        fb.Network.load(tmp_path / "missing.npz")


def _open_files():
    """The paths this process holds open (Linux's /proc), to see that a failed load closed its file."""
    fds = "/proc/self/fd"
    if not os.path.isdir(fds):
        pytest.skip("needs /proc/self/fd")
    paths = []
    for fd in os.listdir(fds):
        try:
            paths.append(os.readlink(os.path.join(fds, fd)))
        except OSError:
            pass
    return paths


@pytest.mark.parametrize("content,reason", [(b"", "it is empty"), (b"hello, world", "not an .npz archive"),
                                            (b"\x93NUMPY junk", "not an .npz archive"), (None, "damaged")])
def test_loading_what_is_not_an_archive_says_so_and_leaves_no_file_open(tmp_path, content, reason):
    path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:100] if content is None else content)  # None: a truncated archive
    with pytest.raises(ValueError) as info:
        fb.Network.load(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    if content is not None:
        assert str(info.value) == f"{path}: not a fastbp network file ({reason})"
    del info
    assert str(path) not in _open_files()
