"""Named engines: each backend lists its engines, in order, each with one covers(plan); the first
that covers a fit's plan runs it and history["engine"] names it; fused=False means the per-batch
loop on every backend. The GPU's plan (LayerPlan, parameters left in the layers) is checked here on
NumPy layers, since CI has no GPU."""
import types

import numpy as np
import pytest

import fastbp as fb
from fastbp.kernels.plan import LayerPlan

numba = pytest.importorskip("numba")
from fastbp.kernels.numba_backend import TWO_THREADS_SUPPORTED  # noqa: E402

X = np.random.default_rng(0).integers(0, 256, (60, 12), dtype=np.uint8)
y = np.random.default_rng(1).integers(0, 3, 60)


def names(be):
    return [e.name for e in be.engines()]


def test_each_backend_lists_its_engines_the_per_batch_loop_last():
    assert names(fb.get_backend("numpy")) == ["numpy-per-batch"]
    assert names(fb.get_backend("numba")) == ["numba-sparse-members-1t", "numba-sparse-2t", "numba-sparse-1t",
                                              "numba-members-1t", "numba-fused-2t", "numba-fused-1t",
                                              "numba-per-batch"]
    three = names(fb.get_backend("numba", threads=3))
    for kind in ("sparse-members", "members"):
        k = three.index(f"numba-{kind}-1t")
        assert three[k:k + 3] == [f"numba-{kind}-{n}t" for n in (1, 2, 3)]
    from fastbp.kernels.cupy_backend import CupyBackend

    gpu = object.__new__(CupyBackend)  # no GPU here: the list and covers() need none
    assert names(gpu) == ["cupy-fused", "cupy-fused-members", "cupy-batched", "cupy-per-batch"]
    fused, batched = (types.SimpleNamespace(fused=f, n_members=1) for f in ({"n_in": 12}, None))
    ensemble = types.SimpleNamespace(fused={"n_in": 12}, n_members=3)
    assert [gpu.engine(p) for p in (fused, ensemble, batched, None)] == ["cupy-fused", "cupy-fused-members",
                                                                         "cupy-batched", "cupy-per-batch"]
    for be in (fb.get_backend("numpy"), fb.get_backend("numba"), gpu):
        assert [e.covers(None) for e in be.engines()][-1] and not any(e.covers(None) for e in be.engines()[:-1])


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("threads,members,sizes,expected", [
    (1, 1, [12, 5, 3], "numba-fused-1t"),
    (2, 1, [12, 5, 3], "numba-fused-2t" if TWO_THREADS_SUPPORTED else "numba-fused-1t"),
    (2, 1, [12, 3], "numba-fused-1t"),  # one layer: nothing to split
    (1, 3, [12, 5, 3], "numba-members-1t"),
    (2, 3, [12, 5, 3], "numba-members-2t"),
    (4, 3, [12, 5, 3], "numba-members-3t"),  # a worker per member, no more
])
def test_the_engine_that_covers_the_plan_runs_and_history_names_it(threads, members, sizes, expected, sparse):
    be = fb.get_backend("numba", threads=threads, sparse=sparse)
    if sparse:
        expected = expected.replace("fused-", "sparse-").replace("members-", "sparse-members-")
    if members == 1:
        h = fb.Network.from_sizes(sizes, backend=be, seed=0).fit(X, y, epochs=1)
    else:
        h = fb.Ensemble.from_sizes(sizes, n_models=members, backend=be).fit(X, y, epochs=1)
    assert h["engine"] == expected
    plan = be.make_plan([fb.Network.from_sizes(sizes, backend=be, seed=k).layers for k in range(members)],
                        "quadratic", [fb.SGD() for _ in range(members)], be.prepare_data(X),
                        be.asarray(np.eye(sizes[-1])[y % sizes[-1]]), 10)
    covering = [e.name for e in be.engines() if e.covers(plan)]
    assert covering[0] == expected and covering[-1] == "numba-per-batch"


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_fused_false_means_the_per_batch_loop_and_the_same_training(backend):
    kw = dict(fused=False) if backend == "numba" else {}
    slow = fb.Network.from_sizes([12, 5, 3], backend=fb.get_backend(backend, dtype="float64", **kw), seed=0)
    fast = fb.Network.from_sizes([12, 5, 3], backend=fb.get_backend("numba", dtype="float64"), seed=0)
    h = slow.fit(X, y, epochs=2, momentum=0.5)
    assert h["engine"] == f"{backend}-per-batch"
    assert fast.fit(X, y, epochs=2, momentum=0.5)["engine"] == "numba-fused-1t"
    for p, q in zip(slow.get_params(), fast.get_params()):
        np.testing.assert_allclose(p["W"], q["W"], rtol=1e-9, atol=1e-12)


def test_the_layer_plan_holds_hyperparameters_and_undoes_an_epoch_in_the_layers():
    nets = [fb.Network.from_sizes([12, 5, 3], backend="numpy", dtype="float64", seed=k) for k in range(2)]
    opts = [fb.SGD(0.5, momentum=0.9), fb.SGD(0.1, momentum=0.9)]
    for net, opt in zip(nets, opts):
        net.fit(X, y, epochs=1, optimizer=opt)  # velocities made
    plan = LayerPlan([n.layers for n in nets], "quadratic", opts, fused=None)
    assert plan.n_members == 2 and plan.n_layers == 2 and list(plan.sizes) == [12, 5, 3]
    np.testing.assert_array_equal(plan.hp, [opts[0].hyperparameters(), opts[1].hyperparameters()])
    opts[1].lr = 0.2
    plan.refresh()
    assert plan.hp[1][fb.kernels.ops.HP["lr"]] == 0.2
    snap = plan.snapshot()
    before = [n.get_params() for n in nets]
    velocity = [o.snapshot(n.layers) for n, o in zip(nets, opts)]
    for net, opt in zip(nets, opts):
        net.fit(X, y, epochs=1, optimizer=opt)
    nets[1].layers[0].W[0, 0] = np.nan
    assert list(plan.finite()) == [True, False]
    plan.restore(snap, members=[1])
    assert list(plan.finite()) == [True, True]
    np.testing.assert_array_equal(nets[1].get_params()[0]["W"], before[1][0]["W"])
    np.testing.assert_array_equal(opts[1].layer_state(nets[1].layers[0])["W"], velocity[1]["layers"][0]["W"])
    assert opts[1].t == velocity[1]["t"] and opts[0].t > velocity[0]["t"]  # the update count too
    assert not np.array_equal(nets[0].get_params()[0]["W"], before[0][0]["W"])  # member 0 was not restored
