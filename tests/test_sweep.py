"""fastbp.sweep without Dask: train_pack's results equal the lone networks trained with each
configuration; packs splits in order and by shape; bad inputs are errors naming the argument."""
import numpy as np
import pytest

import fastbp as fb
from fastbp.sweep import packs, train_pack

SIZES = [64, 12, 10]
NET = dict(activation="tanh", output_activation="softmax", loss="cross_entropy")
CONFIGS = [dict(lr=0.05, seed=3), dict(lr=0.2, momentum=0.5, seed=1),
           dict(lr=0.1, weight_decay=1e-3, seed=3), dict(momentum=0.9)]  # the last: lr 0.1, seed 0


@pytest.fixture(scope="module")
def digits():
    X, y, Xt, yt = fb.datasets.load_digits()[:4]
    return X[:300], y[:300], Xt[:100], yt[:100]


def lone(config, X, y, backend, **fit):
    """The network train_pack's member should equal: alone, with the configuration's arguments."""
    net = fb.Network.from_sizes(config.get("sizes", SIZES), seed=config.get("seed", 0), backend=backend,
                                dtype="float64", **NET)
    h = net.fit(X, y, lr=config.get("lr", 0.1), momentum=config.get("momentum", 0.0),
                weight_decay=config.get("weight_decay", 0.0), **fit)
    return net, h


def assert_params_equal(a, b):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        np.testing.assert_allclose(p["W"], q["W"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p["b"], q["b"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_each_result_equals_the_lone_network_of_its_configuration(digits, backend):
    X, y, Xt, yt = digits
    results = train_pack(CONFIGS, X, y, SIZES, epochs=3, batch_size=16, validation_data=(Xt, yt),
                         backend=backend, dtype="float64", **NET)
    assert [r["config"] for r in results] == CONFIGS
    for r, config in zip(results, CONFIGS):
        net, h = lone(config, X, y, backend, epochs=3, batch_size=16, validation_data=(Xt, yt))
        assert_params_equal(r["params"], net.get_params())
        np.testing.assert_allclose(r["history"]["loss"], h["loss"], rtol=1e-10)
        np.testing.assert_allclose(r["history"]["val_loss"], h["val_loss"], rtol=1e-10)
        assert r["history"]["val_accuracy"] == h["val_accuracy"]
        assert r["loss"] == r["history"]["loss"][-1] and r["val_accuracy"] == h["val_accuracy"][-1]
        assert r["val_loss"] == r["history"]["val_loss"][-1] and r["diverged"] is None
        assert net.evaluate(Xt, yt)["accuracy"] == r["val_accuracy"]


def test_without_validation_data_and_sizes_from_the_configurations(digits):
    X, y, _, _ = digits
    configs = [dict(sizes=[64, 5, 10], lr=0.3, seed=2), dict(sizes=(64, 5, 10), seed=4)]
    results = train_pack(configs, X, y, epochs=2, backend="numpy", dtype="float64", **NET)
    for r, config in zip(results, configs):
        assert r["val_loss"] is None and r["val_accuracy"] is None
        assert r["history"]["val_accuracy"] == [] and len(r["history"]["loss"]) == 2
        assert [p["W"].shape for p in r["params"]] == [(64, 5), (5, 10)]
        net, _ = lone(config, X, y, "numpy", epochs=2)
        assert_params_equal(r["params"], net.get_params())
    assert results[0]["config"] is not configs[0]  # a copy: changing it leaves the caller's alone


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow of the diverging member
def test_a_diverging_configuration_is_reported_and_the_others_train_on(digits):
    X, y, _, _ = digits
    X = X.astype(np.float64)  # unscaled 0..255: lr 1e6 overflows in the first epoch
    configs = [dict(lr=1e-3), dict(lr=1e6, seed=1)]
    kw = dict(activation="tanh", output_activation="identity", loss="mse")
    results = train_pack(configs, X, y, SIZES, epochs=2, backend="numpy", dtype="float64", **kw)
    assert results[1]["diverged"] == 1 and np.isnan(results[1]["loss"])
    assert results[0]["diverged"] is None and np.isfinite(results[0]["loss"])
    net = fb.Network.from_sizes(SIZES, seed=0, backend="numpy", dtype="float64", **kw)
    net.fit(X, y, epochs=2, lr=1e-3)
    assert_params_equal(results[0]["params"], net.get_params())


def test_packs_split_in_order_and_by_shape():
    configs = [dict(lr=0.1 * i, seed=i) for i in range(1, 8)]
    assert packs(configs, 3) == [configs[:3], configs[3:6], configs[6:]]
    assert packs(configs, 7) == [configs] and packs(configs, 100) == [configs]
    assert packs(iter(configs), 1) == [[c] for c in configs]
    wide = [dict(sizes=[64, 30, 10], seed=i) for i in range(3)]
    mixed = [configs[0], wide[0], configs[1], wide[1], wide[2], configs[2]]
    assert packs(mixed, 2) == [[configs[0], configs[1]], [configs[2]], wide[:2], wide[2:]]
    assert sum(map(len, packs([dict(seed=s) for s in range(64)], 8))) == 64


@pytest.mark.parametrize("call, error, message", [
    (lambda X, y: train_pack([], X, y, SIZES), ValueError, r"^configs: expected at least one configuration"),
    (lambda X, y: packs([], 4), ValueError, r"^configs: expected at least one configuration"),
    (lambda X, y: train_pack({"lr": 0.1}, X, y, SIZES), TypeError, r"^configs: .*got dict .*pass \[config\]"),
    (lambda X, y: train_pack(None, X, y, SIZES), TypeError, r"^configs: expected a list of dicts"),
    (lambda X, y: train_pack([{"lr": 0.1}, 0.5], X, y, SIZES), TypeError, r"^configs\[1\]: expected a dict"),
    (lambda X, y: train_pack([{"lr": 0.1}, {"learning_rate": 0.5}], X, y, SIZES), ValueError,
     r"^configs\[1\]: unknown key 'learning_rate'; expected some of lr, momentum, weight_decay, seed, sizes"),
    (lambda X, y: packs([{"lr": 0.1, "eta": 1, "batch_size": 2}], 4), ValueError,
     r"^configs\[0\]: unknown keys 'eta', 'batch_size'"),
    (lambda X, y: train_pack([{"lr": -1}], X, y, SIZES), ValueError, r"^configs\[0\]: lr: expected a positive"),
    (lambda X, y: train_pack([{}, {"momentum": 1.0}], X, y, SIZES), ValueError, r"^configs\[1\]: momentum: .*< 1"),
    (lambda X, y: train_pack([{"weight_decay": "a"}], X, y, SIZES), TypeError, r"^configs\[0\]: weight_decay:"),
    (lambda X, y: packs([{"seed": -2}], 4), ValueError, r"^configs\[0\]: seed: expected None or an integer"),
    (lambda X, y: train_pack([{"sizes": 64}], X, y), TypeError, r"^configs\[0\]: sizes: expected a list"),
    (lambda X, y: train_pack([{"lr": 0.1}, {"sizes": [64, 30, 10]}], X, y, SIZES), ValueError,
     r"^configs\[1\]: sizes \[64, 30, 10\] differ from configs\[0\]'s \[64, 12, 10\]; a pack trains one network"),
    (lambda X, y: train_pack([{"lr": 0.1}], X, y), ValueError, r"^sizes: expected the layer sizes"),
    (lambda X, y: packs([{}], 0), ValueError, r"^size: expected a positive integer, got 0"),
    (lambda X, y: packs([{}], 2.5), TypeError, r"^size: expected a positive integer"),
    (lambda X, y: train_pack([{}], X, y, SIZES, epochs=0), ValueError, r"^epochs: expected a positive integer"),
])
def test_errors_name_the_argument(digits, call, error, message):
    X, y, _, _ = digits
    with pytest.raises(error, match=message):
        call(X, y)
