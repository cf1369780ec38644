"""The optimisers (SGD with classical or Nesterov momentum, Adam) and the learning-rate schedules:
the NumPy reference against independent implementations (scikit-learn's own optimisers), every
engine against the reference for every optimiser x schedule over a few hundred steps, and the
schedules' rules."""
import importlib.util

import numpy as np
import pytest

import fastbp as fb
from fastbp.schedules import Adaptive, Constant, InverseScaling

HAS_NUMBA = importlib.util.find_spec("numba") is not None
rng = np.random.default_rng(0)
X = rng.integers(0, 256, (300, 20), dtype=np.uint8)
y = rng.integers(0, 3, 300)

OPTIMIZERS = {
    "sgd": lambda: fb.SGD(0.5),
    "momentum-decay": lambda: fb.SGD(0.2, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda: fb.SGD(0.2, momentum=0.8, nesterov=True, weight_decay=1e-3),
    "adam": lambda: fb.Adam(0.01),
    "adam-decay": lambda: fb.Adam(0.005, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.01),
}
SCHEDULES = {
    "constant": lambda lr: lr,
    "invscaling": lambda lr: InverseScaling(lr * 20, power_t=0.5),
    "adaptive": lambda lr: Adaptive(lr, tol=0.05, patience=1),
    "callable": lambda lr: (lambda epoch: lr / (1 + epoch)),
}


# --- the reference against scikit-learn's optimisers -------------------------------------------------
def test_adam_and_nesterov_steps_match_scikit_learns_optimisers():
    sk = pytest.importorskip("sklearn.neural_network._stochastic_optimizers")
    r = np.random.default_rng(1)
    grads = [[r.normal(size=(4, 3)), r.normal(size=3)] for _ in range(50)]
    for ours, theirs in [
        (fb.Adam(0.01, beta1=0.8, beta2=0.99, eps=1e-7),
         lambda p: sk.AdamOptimizer(p, learning_rate_init=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-7)),
        (fb.SGD(0.05, momentum=0.9, nesterov=True),
         lambda p: sk.SGDOptimizer(p, learning_rate_init=0.05, momentum=0.9, nesterov=True)),
        (fb.SGD(0.05, momentum=0.9),
         lambda p: sk.SGDOptimizer(p, learning_rate_init=0.05, momentum=0.9, nesterov=False)),
    ]:
        a = [np.ones((4, 3)), np.zeros(3)]
        b = [p.copy() for p in a]
        ref = theirs(b)
        for g in grads:
            ours.step(a, [gi.copy() for gi in g])
            ref.update_params(b, [gi.copy() for gi in g])
        for p, q in zip(a, b):
            np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
        assert ours.t == len(grads)


# --- every engine against the reference --------------------------------------------------------------
def engines():
    out = []
    if HAS_NUMBA:
        out += [("numba", dict(dtype="float64")), ("numba", dict(dtype="float64", threads=2)),
                ("numba", dict(dtype="float64", fused=False))]
    return out


def train(backend, members, opt_name, schedule_name, epochs=5):
    """Parameters and optimiser state after training on ``backend`` (a name and its options)."""
    name, kw = backend
    be = fb.get_backend(name, **kw) if name != "numpy" else fb.get_backend("numpy", dtype="float64")
    make = OPTIMIZERS[opt_name]
    lr = SCHEDULES[schedule_name](make().lr)
    if members == 1:
        nets = [fb.Network.from_sizes([20, 7, 3], backend=be, seed=0)]
        h = nets[0].fit(X, y, epochs=epochs, batch_size=7, lr=lr, optimizer=make())
    else:
        ens = fb.Ensemble.from_sizes([20, 7, 3], n_models=members, backend=be)
        h = ens.fit(X, y, epochs=epochs, batch_size=7, lr=lr, optimizer=make())
        nets = ens.members
    return h, nets


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("opt_name", OPTIMIZERS)
@pytest.mark.parametrize("members", [1, 2])
def test_every_engine_agrees_with_the_reference_for_every_optimizer_and_schedule(opt_name, schedule_name, members):
    ref_h, ref = train(("numpy", {}), members, opt_name, schedule_name)
    assert len(ref_h["loss"]) == 5  # 5 epochs of 43 steps
    for backend in engines():
        h, nets = train(backend, members, opt_name, schedule_name)
        np.testing.assert_allclose(np.array(h["lr"], dtype=float), np.array(ref_h["lr"], dtype=float), rtol=1e-12)
        np.testing.assert_allclose(np.array(h["loss"], dtype=float), np.array(ref_h["loss"], dtype=float), rtol=1e-8)
        for net, r in zip(nets, ref):
            assert net.optimizer.t == r.optimizer.t == 215
            for p, q in zip(net.get_params(), r.get_params()):
                np.testing.assert_allclose(p["W"], q["W"], rtol=1e-8, atol=1e-10, err_msg=f"{backend} {h['engine']}")
                np.testing.assert_allclose(p["b"], q["b"], rtol=1e-8, atol=1e-10, err_msg=f"{backend} {h['engine']}")
            for layer, rlayer in zip(net.layers, r.layers):
                for k, s in r.optimizer.layer_state(rlayer).items():
                    got = net.optimizer.layer_state(layer)[k]
                    slots = 2 if opt_name.startswith("adam") else 1  # the reference keeps no gradient buffer
                    np.testing.assert_allclose(got[:slots], s[:slots], rtol=1e-7, atol=1e-10)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("opt_name", ["nesterov", "adam"])
def test_float32_engines_stay_close_to_the_float64_reference(opt_name):
    ref_h, ref = train(("numpy", {}), 1, opt_name, "constant", epochs=3)
    for kw in (dict(dtype="float32"), dict(dtype="float32", threads=2)):
        h, nets = train(("numba", kw), 1, opt_name, "constant", epochs=3)
        np.testing.assert_allclose(h["loss"], ref_h["loss"], rtol=2e-3)
        for p, q in zip(nets[0].get_params(), ref[0].get_params()):
            np.testing.assert_allclose(p["W"], q["W"], rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("backend", ["numpy"] + (["numba"] if HAS_NUMBA else []))
def test_an_ensemble_member_with_adam_equals_the_lone_network(backend):
    ens = fb.Ensemble.from_sizes([20, 6, 3], n_models=3, seeds=[4, 5, 6], backend=backend)
    ens.fit(X, y, epochs=2, batch_size=10, optimizer=fb.Adam(0.01, weight_decay=1e-3),
            lr=[0.01, 0.02, InverseScaling(0.3)])
    for k, lr in enumerate([0.01, 0.02, InverseScaling(0.3)]):
        net = fb.Network.from_sizes([20, 6, 3], seed=4 + k, backend=backend)
        net.fit(X, y, epochs=2, batch_size=10, optimizer=fb.Adam(0.01, weight_decay=1e-3), lr=lr)
        for p, q in zip(ens[k].get_params(), net.get_params()):
            np.testing.assert_allclose(p["W"], q["W"], rtol=1e-5, atol=1e-6)


def test_the_optimizers_check_their_arguments():
    with pytest.raises(ValueError, match="beta1"):
        fb.Adam(beta1=1.0)
    with pytest.raises(ValueError, match="eps"):
        fb.Adam(eps=0)
    with pytest.raises(TypeError, match="nesterov"):
        fb.SGD(nesterov="yes")
    ens = fb.Ensemble.from_sizes([20, 6, 3], n_models=2, backend="numpy")
    opt = fb.Adam()
    with pytest.raises(ValueError, match="an optimiser of its own"):
        ens.fit(X, y, optimizer=[opt, opt])
    with pytest.raises(TypeError, match="one per member"):
        ens.fit(X, y, optimizer="adam")


# --- the schedules -----------------------------------------------------------------------------------
def test_inverse_scaling_counts_samples_as_scikit_learn_does():
    s = InverseScaling(0.1, power_t=0.5)
    assert s.rate(0, 0) == 0.1 and s.rate(2, 600) == pytest.approx(0.1 / 601 ** 0.5)
    assert InverseScaling(0.1, start=99).rate(0, 0) == pytest.approx(0.01)
    net = fb.Network.from_sizes([20, 5, 3], backend="numpy", seed=0)
    h = net.fit(X, y, epochs=3, lr=InverseScaling(1.0, power_t=0.25))
    assert h["lr"] == pytest.approx([1.0, 301 ** -0.25, 601 ** -0.25])


def test_adaptive_divides_after_patience_epochs_without_improvement_and_stops_at_its_floor():
    s = Adaptive(1.0, tol=0.1, patience=2, factor=5.0, min_lr=0.01)
    for loss in [1.0, 0.5, 0.45, 0.44]:  # the last two improve by less than tol
        s.observe(loss)
    assert s.lr == pytest.approx(0.2) and not s.done
    for loss in [0.44, 0.44]:
        s.observe(loss)
    assert s.lr == pytest.approx(0.04)
    s.observe(float("nan"))
    s.observe(0.44)
    assert s.done and s.lr == pytest.approx(0.04)  # 0.008 would be below the floor
    net = fb.Network.from_sizes([20, 5, 3], backend="numpy", seed=0)
    h = net.fit(X, y, epochs=50, lr=Adaptive(0.5, tol=10.0, patience=1, min_lr=0.001))
    # the first epoch sets the best loss; each later one fails to improve by tol: divided, until the
    # next rate (0.0008) would be below the floor, and training stops
    assert h["lr"] == pytest.approx([0.5, 0.5, 0.1, 0.02, 0.004])


def test_a_callable_schedule_is_checked_and_recorded():
    net = fb.Network.from_sizes([20, 5, 3], backend="numpy", seed=0)
    h = net.fit(X, y, epochs=3, lr=lambda epoch: 0.1 * (epoch + 1))
    assert h["lr"] == pytest.approx([0.1, 0.2, 0.3]) and net.optimizer.lr == pytest.approx(0.3)
    with pytest.raises(ValueError, match="for epoch 1"):
        net.fit(X, y, epochs=3, lr=lambda epoch: 0.1 if epoch == 0 else -1.0)
    with pytest.raises(TypeError, match="lr: expected a positive number, a fastbp schedule"):
        net.fit(X, y, lr="fast")
    assert Constant(0.3).rate(7, 100) == 0.3


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("threads", [1, 2])
def test_adam_leaves_frozen_parameters_alone_on_every_engine(threads):
    def make(backend):
        layers = [fb.Dense(20, 6, "tanh", frozen=("b",)), fb.Dense(6, 3, "sigmoid", frozen=("W",))]
        return fb.Network(layers, backend=backend, dtype="float64", seed=2)

    ref, fused = make("numpy"), make(fb.get_backend("numba", dtype="float64", threads=threads))
    before = ref.get_params()
    for net in (ref, fused):
        net.fit(X, y, epochs=3, batch_size=9, optimizer=fb.Adam(0.02, weight_decay=1e-3))
    for p, q, b in zip(fused.get_params(), ref.get_params(), before):
        np.testing.assert_allclose(p["W"], q["W"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(p["b"], q["b"], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(fused.get_params()[0]["b"], before[0]["b"])
    np.testing.assert_array_equal(fused.get_params()[1]["W"], before[1]["W"])


@pytest.mark.parametrize("weights,exc,match", [
    (np.ones(3), ValueError, r"sample_weight: expected shape \(300,\)"),
    (-np.ones(300), ValueError, "sample_weight: expected weights >= 0"),
    (np.full(300, np.nan), ValueError, "sample_weight: contains NaN"),
    (np.zeros(300), ValueError, "sample_weight: the weights sum to 0"),
    (np.array(["a"] * 300), TypeError, "sample_weight: expected numbers"),
])
def test_bad_sample_weights_are_named(weights, exc, match):
    net = fb.Network.from_sizes([20, 5, 3], backend="numpy", seed=0)
    before = net.get_params()
    with pytest.raises(exc, match=match):
        net.fit(X, y, sample_weight=weights)
    for p, q in zip(before, net.get_params()):
        np.testing.assert_array_equal(p["W"], q["W"])


def test_sample_weights_scale_each_sample_on_every_engine():
    w = np.random.default_rng(3).random(300) * 2
    nets = {}
    for name in ["numpy"] + (["numba"] if HAS_NUMBA else []):
        net = fb.Network.from_sizes([20, 5, 3], backend=name, dtype="float64", seed=0)
        h = net.fit(X, y, epochs=2, batch_size=16, optimizer=fb.Adam(0.01), sample_weight=w)
        assert h["engine"] == f"{name}-per-batch"
        nets[name] = (net, h)
    ref, h_ref = nets["numpy"]
    plain = fb.Network.from_sizes([20, 5, 3], backend="numpy", dtype="float64", seed=0)
    h_plain = plain.fit(X, y, epochs=2, batch_size=16, optimizer=fb.Adam(0.01))
    assert h_ref["loss"][0] != pytest.approx(h_plain["loss"][0], rel=1e-6)  # the weights made a difference
    for net, h in nets.values():
        np.testing.assert_allclose(h["loss"], h_ref["loss"], rtol=1e-9)
        np.testing.assert_allclose(net.get_params()[0]["W"], ref.get_params()[0]["W"], rtol=1e-8, atol=1e-12)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("make_opt", [lambda: fb.SGD(0.2, momentum=0.9), lambda: fb.SGD(0.2, momentum=0.9, nesterov=True),
                                      lambda: fb.Adam(0.01)], ids=["momentum", "nesterov", "adam"])
def test_float32_state_that_decays_where_the_gradient_stays_zero_never_goes_subnormal(make_opt, threads):
    # after one epoch, input 0 is zero for good: its weights' gradient is exactly zero, so their
    # velocities and Adam's first moments decay geometrically (0.9 a step) into subnormal floats
    # (slow) unless flushed; the float64 reference says what the weights should be
    live, dead = X.astype(np.float32) / 255, X.astype(np.float32) / 255
    dead[:, 0] = 0
    nets = [fb.Network.from_sizes([20, 8, 3], backend=b, dtype=d, seed=4)
            for b, d in [(fb.get_backend("numba", threads=threads), "float32"), ("numpy", "float64")]]
    for net in nets:
        opt = make_opt()
        net.fit(live, y, epochs=1, batch_size=10, optimizer=opt)
        net.fit(dead, y, epochs=40, batch_size=10, optimizer=opt)  # 1200 steps: 0.9**1200 ~ 1e-55
    fused, ref = nets
    state = fused.optimizer.state_of(fused.layers[0], "W", create=False)
    first = state[0, 0]  # the velocity, or Adam's first moment, of input 0's weights
    assert np.all(first == 0), first  # flushed, not subnormal (and not finite-but-stuck)
    assert not np.any((np.abs(state) > 0) & (np.abs(state) < np.finfo(np.float32).tiny))
    np.testing.assert_allclose(fused.layers[0].W, ref.layers[0].W, rtol=2e-3, atol=2e-4)
