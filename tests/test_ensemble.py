"""fb.Ensemble: member i trained in the ensemble equals the lone network with seed i trained with
the same arguments, on every backend and engine; per-member hyperparameters; divergence of one
member; save/load; errors."""
import numpy as np
import pytest

import fastbp as fb

SIZES = [16, 9, 4]


def data(n=53, n_in=16, n_out=4, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, n_in)).astype(dtype)
    y = (X[:, :n_out].argmax(axis=1)).astype(np.int64)
    return X, y


def backends():
    return {"numpy": lambda dt: fb.get_backend("numpy", dt),
            "numba-1": lambda dt: fb.get_backend("numba", dt),
            "numba-2": lambda dt: fb.get_backend("numba", dt, threads=2),
            "numba-3": lambda dt: fb.get_backend("numba", dt, threads=3),
            "numba-unfused": lambda dt: fb.get_backend("numba", dt, fused=False)}


def assert_members_equal_lone(ens, lone, dtype):
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    for k, (a, b) in enumerate(zip(ens, lone)):
        for p, q in zip(a.get_params(), b.get_params()):
            np.testing.assert_allclose(p["W"], q["W"], **tol, err_msg=f"member {k}")
            np.testing.assert_allclose(p["b"], q["b"], **tol, err_msg=f"member {k}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", list(backends()))
@pytest.mark.parametrize("config", [
    dict(activation="sigmoid", loss="quadratic", fit=dict(batch_size=10)),
    dict(activation="tanh", output_activation="softmax", loss="cross_entropy",
         fit=dict(batch_size=7, momentum=[0.0, 0.9, 0.5], weight_decay=[0.0, 0.01, 0.001])),
    dict(activation="relu", output_activation="sigmoid", loss="binary_cross_entropy",
         fit=dict(batch_size=1, shuffle=False)),
], ids=["sigmoid-quadratic", "softmax-momentum-decay", "bce-batch1-noshuffle"])
def test_each_member_equals_the_lone_network_with_its_seed(dtype, backend, config):
    config = dict(config)
    fit = dict(config.pop("fit"), epochs=3, lr=[0.5, 0.1, 2.0])
    X, y = data()
    seeds = [3, 11, 7]
    ens = fb.Ensemble.from_sizes(SIZES, n_models=3, seeds=seeds, backend=backends()[backend](dtype), **config)
    history = ens.fit(X, y, validation_data=(X[:20], y[:20]), **fit)
    lone = []
    for k, seed in enumerate(seeds):  # each alone, on the same kind of backend, with its own arguments
        net = fb.Network.from_sizes(SIZES, seed=seed, backend=backends()[backend](dtype), **config)
        own = {key: (v[k] if isinstance(v, list) else v) for key, v in fit.items()}
        h = net.fit(X, y, validation_data=(X[:20], y[:20]), **own)
        lone.append(net)
        np.testing.assert_allclose([e[k] for e in history["loss"]], h["loss"], rtol=1e-4)
        assert [e[k] for e in history["val_accuracy"]] == pytest.approx(h["val_accuracy"], abs=0.051)
    assert_members_equal_lone(ens, lone, dtype)
    assert history["diverged"] == {}
    assert len(history["seconds"]) == 3 and all(len(e) == 3 for e in history["loss"])


def test_engines_are_named_in_the_history():
    X, y = data()
    cases = [("numpy", 1, "numpy-per-batch"), (fb.get_backend("numba"), 1, "numba-fused-1t"),
             (fb.get_backend("numba", fused=False), 1, "numba-per-batch"),
             (fb.get_backend("numba", threads=2), 3, "numba-members-2t"),
             (fb.get_backend("numba"), 3, "numba-members-1t")]
    for backend, k, name in cases:
        if k == 1:
            h = fb.Network.from_sizes(SIZES, backend=backend, seed=0).fit(X, y)
        else:
            h = fb.Ensemble.from_sizes(SIZES, n_models=k, backend=backend).fit(X, y)
        assert h["engine"] == name
    if fb.kernels.numba_backend.TWO_THREADS_SUPPORTED:
        h = fb.Network.from_sizes(SIZES, backend=fb.get_backend("numba", threads=2), seed=0).fit(X, y)
        assert h["engine"] == "numba-fused-2t"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings, expected
@pytest.mark.parametrize("backend", ["numpy", "numba-1", "numba-2"])
def test_a_diverging_member_is_put_back_and_stops_while_the_others_train_on(backend):
    X, y = data(dtype=np.float32)  # unscaled 0..255: lr 1e5 overflows float32 in the first epoch
    kw = dict(activation="tanh", output_activation="identity")
    ens = fb.Ensemble.from_sizes(SIZES, n_models=3, seeds=[0, 1, 2], backend=backends()[backend]("float32"), **kw)
    ens.fit(X / 255, y, epochs=1, lr=0.1)
    start = [m.get_params() for m in ens]
    h = ens.fit(X, y, epochs=3, lr=[1e-4, 1e5, 1e-4], momentum=0.5)
    assert h["diverged"] == {1: 1}
    assert not np.isfinite(h["loss"][0][1]) or h["loss"][0][1] > 1e30
    assert np.isnan(h["loss"][1][1]) and np.isnan(h["loss"][2][1])  # not trained after it diverged
    for p, q in zip(start[1], ens[1].get_params()):  # put back to its weights before that epoch
        np.testing.assert_array_equal(p["W"], q["W"])
        np.testing.assert_array_equal(p["b"], q["b"])
    state = ens[1].optimizer.layer_state(ens[1].layers[0])  # its velocities as at the start: zero or none
    assert all(np.array_equal(v, np.zeros_like(v)) for v in state.values())
    for k in (0, 2):  # the others trained on, as they would have alone
        net = fb.Network.from_sizes(SIZES, seed=k, backend=backends()[backend]("float32"), **kw)
        net.fit(X / 255, y, epochs=1, lr=0.1)
        net.fit(X, y, epochs=3, lr=1e-4, momentum=0.5)
        assert_members_equal_lone([ens[k]], [net], "float32")


def test_ensemble_of_existing_networks_predict_evaluate_and_indexing():
    X, y = data()
    nets = [fb.Network.from_sizes(SIZES, backend="numpy", seed=s) for s in (1, 2)]
    ens = fb.Ensemble(nets)
    assert len(ens) == 2 and ens[1] is nets[1] and list(ens) == nets and ens.members == nets
    ens.fit(X, y, epochs=2, lr=0.5)
    mean = (nets[0].predict_proba(X) + nets[1].predict_proba(X)) / 2
    np.testing.assert_allclose(ens.predict_proba(X), mean)
    np.testing.assert_array_equal(ens.predict(X), mean.argmax(axis=1))
    scores = ens.evaluate(X, y)
    assert scores == [nets[0].evaluate(X, y), nets[1].evaluate(X, y)]


def test_save_and_load_round_trip(tmp_path):
    X, y = data()
    ens = fb.Ensemble.from_sizes(SIZES, n_models=3, backend="numpy", output_activation="softmax",
                                 loss="cross_entropy")
    ens.fit(X, y, epochs=1, lr=0.5)
    ens.save(tmp_path / "e.npz")
    back = fb.Ensemble.load(tmp_path / "e.npz", backend="numpy")
    assert len(back) == 3 and back[0].loss == "cross_entropy"
    np.testing.assert_allclose(back.predict_proba(X), ens.predict_proba(X), rtol=1e-6)
    (tmp_path / "bad.npz").write_bytes((tmp_path / "e.npz").read_bytes()[:100])
    with pytest.raises(ValueError, match="bad.npz: not a fastbp ensemble file"):
        fb.Ensemble.load(tmp_path / "bad.npz")
    ens[0].save(tmp_path / "net.npz")
    with pytest.raises(ValueError, match="not a fastbp ensemble file"):
        fb.Ensemble.load(tmp_path / "net.npz")


@pytest.mark.parametrize("make,exc,match", [
    (lambda: fb.Ensemble([]), TypeError, "members: expected a non-empty list"),
    (lambda: fb.Ensemble([fb.Network.from_sizes([4, 3]), fb.Network.from_sizes([4, 2])]), ValueError,
     "member 1 has sizes"),
    (lambda: fb.Ensemble([fb.Network.from_sizes([4, 3], backend="numpy"),
                          fb.Network.from_sizes([4, 3], backend="numpy", dtype="float64")]), ValueError,
     "member 1 has dtype float64"),
    (lambda: fb.Ensemble([fb.Network.from_sizes([4, 3], backend="numpy"),
                          fb.Network.from_sizes([4, 3], backend="numba")]), ValueError, "member 1 has backend"),
    (lambda: fb.Ensemble([fb.Network.from_sizes([4, 3], activation="tanh"), fb.Network.from_sizes([4, 3])]),
     ValueError, "member 1 has activations"),
    (lambda: fb.Ensemble.from_sizes([4, 3], n_models=2, seeds=[1]), ValueError, "seeds: expected 2"),
    (lambda: fb.Ensemble.from_sizes([4, 3], n_models=0), ValueError, "n_models"),
])
def test_construction_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(lr=[0.1, 0.2]), ValueError, "lr: expected a number or 3 values"),
    (dict(lr=[0.1, -1.0, 0.1]), ValueError, r"lr: expected a positive number.*got -1.0 \(member 1\)"),
    (dict(momentum=[0.0, 0.0, 1.0]), ValueError, r"momentum.*\(member 2\)"),
    (dict(epochs=0), ValueError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(callback=3), TypeError, "callback"),
])
def test_fit_argument_errors(kwargs, exc, match):
    X, y = data()
    ens = fb.Ensemble.from_sizes(SIZES, n_models=3, backend="numpy")
    with pytest.raises(exc, match=match):
        ens.fit(X, y, **kwargs)


def test_fit_data_errors_match_network_fit():
    X, y = data()
    ens = fb.Ensemble.from_sizes(SIZES, n_models=2, backend="numpy")
    net = fb.Network.from_sizes(SIZES, backend="numpy")
    for bad in [(X[:, :3], y), (X, y[:5]), (X + 0j, y), (X, y + 10)]:
        with pytest.raises((ValueError, TypeError)) as a:
            ens.fit(*bad)
        with pytest.raises((ValueError, TypeError)) as b:
            net.fit(*bad)
        assert str(a.value) == str(b.value)


def test_callback_sees_current_members_and_can_stop():
    X, y = data()
    ens = fb.Ensemble.from_sizes(SIZES, n_models=2, backend=fb.get_backend("numba"))
    seen = []

    def cb(epoch, history):
        seen.append(ens[0].get_params()[0]["W"].copy())
        return epoch == 1
    h = ens.fit(X, y, epochs=5, callback=cb)
    assert len(h["loss"]) == 2 and len(seen) == 2 and not np.array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[1], ens[0].get_params()[0]["W"])


def test_many_members_orders_are_drawn_on_threads_with_the_values_drawn_one_by_one(monkeypatch):
    """An epoch's orders of many members are drawn on threads (made for the call, gone after it),
    each from its member's generator: the same values, and the generators left in the same state,
    as drawing them one after another."""
    import threading

    from fastbp import training

    seen = []
    original = training.ThreadPoolExecutor

    def spy(*args, **kw):
        pool = original(*args, **kw)
        seen.append(pool)
        return pool

    monkeypatch.setattr(training, "ThreadPoolExecutor", spy)
    for threshold, pools in ((training.PARALLEL_DRAWS, 0), (0, 1)):
        monkeypatch.setattr(training, "PARALLEL_DRAWS", threshold)
        rngs = {k: np.random.default_rng(k) for k in (0, 2, 5, 7)}
        out = np.zeros((8, 1000), dtype=np.int64)
        training.draw_orders(rngs, 1000, out)
        alone = [np.random.default_rng(k) for k in (0, 2, 5, 7)]
        for k, rng in zip((0, 2, 5, 7), alone):
            np.testing.assert_array_equal(out[k], rng.permutation(1000))
            assert rngs[k].integers(1 << 30) == rng.integers(1 << 30)  # the same state after
        assert not out[[1, 3, 4, 6]].any()  # rows of members not drawn are left alone
        assert len(seen) == pools
        assert not [t for t in threading.enumerate() if t.name.startswith("fastbp-orders")]
