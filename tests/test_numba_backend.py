"""The numba backend against the NumPy reference: per-batch kernels, the fused epoch (one and two
threads), momentum, weight decay, frozen parameters, reductions, and the fallback path.
Tiny networks only: the first run compiles (seconds), later runs load Numba's on-disk cache."""
import os
import time

import numpy as np
import pytest

pytest.importorskip("numba")

import fastbp as fb  # noqa: E402
from fastbp.kernels import Activation, get_backend  # noqa: E402
from fastbp.kernels.numba_backend import TWO_THREADS_SUPPORTED, NumbaBackend  # noqa: E402

TOL = {"float64": dict(rtol=1e-9, atol=1e-11), "float32": dict(rtol=2e-4, atol=2e-5)}
ACTS = [Activation("sigmoid"), Activation("tanh"), Activation("relu"), Activation("leaky_relu", 0.2),
        Activation("identity"), Activation("softmax"), Activation("exp")]
VALID = [(act, loss) for act in ACTS for loss in fb.kernels.LOSSES
         if fb.kernels.pairs_with(act.name, loss)]


def arrays(dtype, m=7, n_in=12, n_out=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, n_in)).astype(dtype)
    W = (rng.normal(size=(n_in, n_out)) / 3).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, m)]
    return x, W, b, y


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act,loss", VALID, ids=lambda v: str(v))
def test_per_batch_kernels_match_numpy(dtype, act, loss):
    ref, nb = get_backend("numpy", dtype), get_backend("numba", dtype)
    x, W, b, y = arrays(dtype)
    tol = TOL[dtype]
    (z0, a0), (z1, a1) = ref.forward(x, W, b, act), nb.forward(x, W, b, act)
    np.testing.assert_allclose(z1, z0, **tol)
    np.testing.assert_allclose(a1, a0, **tol)
    assert a1.dtype == np.dtype(dtype)
    np.testing.assert_allclose(nb.output_delta(z0, a0, y, act, loss), ref.output_delta(z0, a0, y, act, loss), **tol)
    assert nb.loss(a0, y, loss) == pytest.approx(ref.loss(a0, y, loss), rel=tol["rtol"] * 10, abs=tol["atol"])
    g = np.random.default_rng(1).normal(size=a0.shape).astype(dtype)
    np.testing.assert_allclose(nb.activation_backward(g, z0, a0, act), ref.activation_backward(g, z0, a0, act), **tol)
    delta = ref.output_delta(z0, a0, y, act, loss)
    for r, n in zip(ref.backward(x, W, delta), nb.backward(x, W, delta)):
        np.testing.assert_allclose(n, r, **tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("momentum,decay", [(0.0, 0.0), (0.0, 0.01), (0.9, 0.0), (0.5, 0.02)])
def test_sgd_update_matches_numpy(dtype, momentum, decay):
    ref, nb = get_backend("numpy", dtype), get_backend("numba", dtype)
    rng = np.random.default_rng(2)
    p, g, v = (rng.normal(size=(6, 4)).astype(dtype) for _ in range(3))
    p2, v2 = p.copy(), v.copy()
    ref.sgd_update(p, g, v, 0.3, momentum, decay)
    nb.sgd_update(p2, g, v2, 0.3, momentum, decay)
    np.testing.assert_allclose(p2, p, **TOL[dtype])
    if momentum:
        np.testing.assert_allclose(v2, v, **TOL[dtype])


def make_net(backend, dtype, sizes, hidden, out, loss, frozen=(), seed=0):
    hidden = hidden if isinstance(hidden, list) else [hidden] * (len(sizes) - 2)  # (a list: each layer's own)
    layers = [fb.Dense(i, o, hidden[k] if k < len(sizes) - 2 else out, frozen=frozen if k == 0 else ())
              for k, (i, o) in enumerate(zip(sizes, sizes[1:]))]
    return fb.Network(layers, loss=loss, backend=backend, dtype=dtype, seed=seed)


def data(n=23, n_in=12, n_out=5, seed=1, uint8=True):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, n_in)).astype(np.uint8) if uint8 else rng.normal(size=(n, n_in))
    return X, rng.integers(0, n_out, n)


def train(backend, dtype, sizes=(12, 7, 5), hidden="sigmoid", out="sigmoid", loss="quadratic", epochs=2,
          batch_size=5, frozen=(), X=None, y=None, **fit):
    net = make_net(backend, dtype, list(sizes), hidden, out, loss, frozen)
    if X is None:
        X, y = data(n_in=sizes[0], n_out=sizes[-1])
    h = net.fit(X, y, epochs=epochs, batch_size=batch_size, lr=fit.pop("lr", 0.5), **fit)
    return h, net.get_params(), net


def assert_same(a, b, dtype, scale=1.0):
    (ha, pa), (hb, pb) = a[:2], b[:2]
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    np.testing.assert_allclose(ha["loss"], hb["loss"], **tol)
    for la, lb in zip(pa, pb):
        np.testing.assert_allclose(la["W"], lb["W"], **tol)
        np.testing.assert_allclose(la["b"], lb["b"], **tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act,loss", [(a, l) for a in ACTS for l in ("quadratic", "mse") if a.name != "softmax"],
                         ids=lambda v: str(v))
def test_flat_output_deltas_match_per_row_deltas(dtype, act, loss):
    """The fused epoch's one-loop output deltas (padded rows, a short batch) equal the per-row
    kernel's, the padding and the rows past the batch stay zero, and the summed losses agree."""
    from fastbp.kernels import _nb_common as C
    from fastbp.kernels import _nb_math as K

    rng = np.random.default_rng(3)
    bs, m, n, width = 6, 4, 5, 16  # 4 samples of a batch of 6; 5 outputs padded to 16
    code, lcode = C.ACT_CODES[act.name], C.LOSS_CODES[loss]
    assert K.flat_delta_covers(code, lcode)
    Z, A, Y = (np.zeros((bs, width), dtype) for _ in range(3))
    Z[:m, :n] = rng.normal(size=(m, n))
    A[:m, :n] = get_backend("numpy", dtype).forward(Z[:m, :n], np.eye(n, dtype=dtype), np.zeros(n, dtype), act)[1]
    Y[:m, :n] = np.eye(n, dtype=dtype)[rng.integers(0, n, m)]
    slope, tiny = A.dtype.type(act.slope), A.dtype.type(1e-30)
    D_flat, D_row = np.zeros_like(Z), np.zeros_like(Z)
    total_flat = K.output_delta_flat(Z, A, Y, D_flat, m, n, code, slope, lcode, tiny)
    total_row = sum(K.output_delta_row(Z[s], A[s], Y[s], D_row[s], n, code, slope, lcode, tiny) for s in range(m))
    np.testing.assert_allclose(D_flat, D_row, **TOL[dtype])
    assert np.abs(D_row[:m, :n]).max() > 0
    assert not D_flat[:, n:].any() and not D_flat[m:].any()
    assert total_flat == pytest.approx(total_row, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("m,n_in,n_out", [(63, 13, 5), (64, 13, 5), (150, 37, 30), (101, 784, 10)])
def test_forward_on_large_batches_holds_blas_to_one_thread_and_matches_numpy(dtype, m, n_in, n_out, monkeypatch):
    """From 64 rows on (evaluation, prediction) forward()'s product runs with BLAS held to the
    calling thread (its threads would busy-wait into the next epoch), and given back after: any
    n_in, any n_out, every activation."""
    from fastbp.kernels import numba_backend as NB

    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    import scipy.linalg.cython_blas  # noqa: F401  (every BLAS library loaded before counting their threads)
    held, before = [], blas_threads()
    stock = NB.one_blas_thread

    def recording(used, scipy=True):
        limit = stock(used, scipy)
        held.append(used and set(blas_threads()) == {1})
        return limit

    monkeypatch.setattr(NB, "one_blas_thread", recording)
    ref, nb = get_backend("numpy", dtype), get_backend("numba", dtype)
    x, W, b, _ = arrays(dtype, m=m, n_in=n_in, n_out=n_out, seed=m)
    for act in ACTS:
        (z0, a0), (z1, a1) = ref.forward(x, W, b, act), nb.forward(x, W, b, act)
        np.testing.assert_allclose(z1, z0, **TOL[dtype])
        np.testing.assert_allclose(a1, a0, **TOL[dtype])
    assert held == ([True] * len(ACTS) if m >= 64 else [])
    assert blas_threads() == before  # given back


# depth 1, 2, 3; every output activation and loss; batch sizes with a smaller last batch (23 samples)
CONFIGS = [
    ((12, 5), "sigmoid", "sigmoid", "binary_cross_entropy", 5),
    ((12, 9, 5), "sigmoid", "sigmoid", "quadratic", 5),
    ((12, 9, 5), "tanh", "softmax", "cross_entropy", 7),
    ((12, 9, 5), ("leaky_relu", 0.2), "identity", "mse", 1),
    ((12, 7, 6, 5), "relu", "softmax", "quadratic", 10),
    ((12, 7, 6, 5), "sigmoid", "tanh", "mse", 23),
    ((40, 11, 6, 5), "identity", "sigmoid", "mse", 6),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes,hidden,out,loss,bs", CONFIGS, ids=lambda v: str(v))
def test_fused_epoch_matches_numpy_and_per_batch_path(dtype, sizes, hidden, out, loss, bs):
    kw = dict(sizes=sizes, hidden=hidden, out=out, loss=loss, batch_size=bs)
    ref = train("numpy", dtype, **kw)
    fused = train("numba", dtype, **kw)
    per_batch = train(NumbaBackend(dtype, fused=False), dtype, **kw)
    assert fused[2].backend.name == "numba"
    assert_same(fused, ref, dtype)
    assert_same(per_batch, ref, dtype)
    assert_same(fused, per_batch, dtype)


@pytest.mark.skipif(not TWO_THREADS_SUPPORTED, reason="the two-thread epoch needs two threads")
def test_the_two_thread_and_sparse_epochs_share_one_kernel_above_the_first_layer():
    """The two-thread and sparse epochs (one and two workers) call one compiled ``layers_above``
    (the same argument types: the second engine a user meets loads it), and the calls by address
    in it and around it are found (``slots_below``) with the one-thread epoch's argument types:
    every engine shares the activation, delta and update kernels of a configuration."""
    from numba import types

    from fastbp.kernels import _nb_common as C
    from fastbp.kernels import _nb_epoch as F
    from fastbp.kernels import _nb_sparse as S

    X, y = data(n_in=16, n_out=4)
    X[X < 160] = 0  # (mostly zeros: what the sparse engine is for)
    engines = {}
    for threads, sparse in ((1, False), (2, False), (1, True), (2, True)):
        net = fb.Network.from_sizes([16, 9, 4], backend=NumbaBackend("float32", threads=threads, sparse=sparse), seed=1)
        engines[net.fit(X, y, epochs=1, batch_size=5, lr=0.5)["engine"]] = True
    assert set(engines) == {"numba-fused-1t", "numba-fused-2t", "numba-sparse-1t", "numba-sparse-2t"}

    above, slots, callers = set(), {}, set()
    for kernel in (F.train_epoch, F.train_epoch_2t, S.train_epoch_sparse):
        for cres in kernel.overloads.values():  # (the float32 ones: this test's, and maybe other tests')
            if types.Array(types.float32, 1, "C") not in cres.signature.args:  # (W, b)
                continue
            direct = set(cres.library._reload_init) | set(cres.reload_init or ())
            calls = {h.argtypes for h in direct if isinstance(h, C._Load) and h.name == "layers_above"}
            above |= calls
            callers |= {kernel.py_func.__name__} if calls else set()
            below = C.slots_below(cres)  # (the two-thread epoch's own call by address: layer 0's update only)
            assert {F.SLOT_HIDDEN, F.SLOT_OUT, F.SLOT_DELTAS, F.SLOT_BACK, F.SLOT_UPDATE} <= {h.index for h in below}
            for hook in below:
                assert slots.setdefault(hook.index, hook.argtypes) == hook.argtypes, (kernel, hook.index)
    assert callers == {"train_epoch_2t", "train_epoch_sparse"}
    assert len(above) == 1  # one kernel for both engines
    assert set(slots) == {F.SLOT_HIDDEN, F.SLOT_OUT, F.SLOT_DELTAS, F.SLOT_UPDATE, F.SLOT_BACK, F.SLOT_BEGIN,
                          F.SLOT_FINISH}


@pytest.mark.parametrize("engine", ["1t", "2t", "sparse"])
def test_hidden_layers_of_different_activations_match_numpy(engine):
    """The kernels a fused epoch calls by address are compiled for the configuration's codes
    (``slot_codes``); hidden layers that differ get the kernel that reads each layer's code, and
    train as NumPy does."""
    from fastbp.kernels import _nb_common as C
    from fastbp.kernels import _nb_epoch as F

    kw = dict(sizes=(12, 7, 6, 5), hidden=["relu", ("leaky_relu", 0.1)], out="softmax", loss="cross_entropy")
    ref = train("numpy", "float64", **kw)
    be = NumbaBackend("float64", threads=2 if engine == "2t" else 1, sparse=engine == "sparse")
    fused = train(be, "float64", **kw)
    assert fused[0]["engine"] == {"1t": "numba-fused-1t", "2t": "numba-fused-2t", "sparse": "numba-sparse-1t"}[engine]
    assert_same(fused, ref, "float64")
    X, y = data(n_in=12)
    plan = be.make_plan([fused[2].layers], "cross_entropy", [fb.SGD()], be.prepare_data(X), be.asarray(np.eye(5)[y]), 5)
    assert F.slot_codes(F.SLOT_HIDDEN, plan.acts, plan.loss, plan.opt) == {}
    assert F.slot_codes(F.SLOT_BACK, plan.acts, plan.loss, plan.opt) == {}  # (their deltas: the same)
    relu = C.ACT_CODES["relu"]
    assert F.slot_codes(F.SLOT_BACK, np.array([relu, relu, plan.acts[-1]]), plan.loss, plan.opt) == {"code": relu}
    assert F.slot_codes(F.SLOT_OUT, plan.acts, plan.loss, plan.opt) == {"code": C.ACT_CODES["softmax"]}
    assert F.slot_codes(F.SLOT_DELTAS, plan.acts, plan.loss, plan.opt) == {"act": C.ACT_CODES["softmax"],
                                                                         "loss": C.LOSS_CODES["cross_entropy"]}


@pytest.mark.parametrize("sparse", [False, True])
def test_a_network_without_hidden_layers_calls_no_hidden_kernel_and_compiles_none(sparse):
    """One layer: the slots of the hidden layers' activation and deltas are never called, so they
    get no kernel (address 0; a backprop variant used to be compiled for nothing), and the epoch
    trains as NumPy does."""
    from fastbp.kernels import _nb_epoch as F
    import fastbp.kernels.numba_backend as NB

    kw = dict(sizes=(12, 5), out="tanh", loss="mse")
    ref = train("numpy", "float64", **kw)
    be = NumbaBackend("float64", sparse=sparse)
    fused = train(be, "float64", **kw)
    assert fused[0]["engine"] == ("numba-sparse-1t" if sparse else "numba-fused-1t")
    assert_same(fused, ref, "float64")
    X, y = data(n_in=12)
    acts = be.make_plan([fused[2].layers], "mse", [fb.SGD()], be.prepare_data(X), be.asarray(np.eye(5)[y]), 5).acts
    assert F.slot_codes(F.SLOT_BACK, acts, 0, 0) is None and F.slot_codes(F.SLOT_HIDDEN, acts, 0, 0) is None
    kernel = NB.KS.train_epoch_sparse if sparse else NB.KF.train_epoch
    kernel = getattr(kernel, "dispatcher", kernel)
    mine = [fns for key, fns in NB._SLOT_ADDRESSES.items() if key[0] is kernel and key[2] == acts.tobytes()]
    assert mine and all(f[F.SLOT_BACK] == 0 and f[F.SLOT_HIDDEN] == 0 and f[F.SLOT_OUT] != 0 for f in mine)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fit", [dict(momentum=0.9), dict(weight_decay=0.01), dict(momentum=0.5, weight_decay=0.02),
                                 dict(optimizer=fb.SGD(0.1, reduction="sum"))], ids=str)
def test_optimizer_options_match_numpy(dtype, fit):
    ref = train("numpy", dtype, epochs=3, **dict(fit))
    fused = train("numba", dtype, epochs=3, **dict(fit))
    assert_same(fused, ref, dtype)
    if fit.get("momentum"):
        for lr_, lf in zip(ref[2].layers, fused[2].layers):
            for name in "Wb":
                np.testing.assert_allclose(fused[2].optimizer.layer_state(lf)[name],
                                           ref[2].optimizer.layer_state(lr_)[name], **TOL[dtype])


@pytest.mark.parametrize("frozen", [("W",), ("b",), ("W", "b")])
def test_frozen_parameters_stay_fixed_and_match_numpy(frozen):
    before = make_net("numpy", "float64", [12, 7, 5], "sigmoid", "sigmoid", "quadratic", frozen).get_params()
    ref = train("numpy", "float64", frozen=frozen, momentum=0.5)
    fused = train("numba", "float64", frozen=frozen, momentum=0.5)
    assert_same(fused, ref, "float64")
    for name in frozen:
        np.testing.assert_array_equal(fused[1][0][name], before[0][name])


def test_float_inputs_and_single_sample_batches():
    X, y = data(uint8=False)
    assert_same(train("numba", "float64", X=X, y=y, batch_size=1), train("numpy", "float64", X=X, y=y, batch_size=1),
                "float64")


def test_the_blocks_width_follows_the_features_numba_compiles_for():
    from fastbp.kernels import _nb_blocked as B
    from fastbp.kernels import _nb_intrinsics as I

    assert I.register_bytes("+sse2,+avx,+avx2,+fma,-avx512f") == 32
    assert I.register_bytes("+avx2,+avx512f,+avx512vl") == 64
    assert I.register_bytes("+sse2,-avx,-avx2,-avx512f") == 16
    assert I.register_bytes("") == 16
    assert I.REGISTER_BYTES == I.register_bytes(I._target_features())
    assert (B.UNITS, B.SAMPLES) == ((4, 5) if I.REGISTERS == 32 else (2, 5))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_blocked_products_match_numpy_for_every_block_and_tail(dtype):
    """The register-blocked forward product and weight gradient (the vector blocks of the
    machine's width, then the leftover units and samples) against NumPy, for unit counts and
    sample ranges that end in each kind of tail, at offsets into the flat weights and the batch."""
    from fastbp.kernels import _nb_blocked as B

    rng = np.random.default_rng(3)
    dt = np.dtype(dtype).type
    ld = 128 // np.dtype(dtype).itemsize * 3  # a padded row of three 128-byte pieces
    x = rng.normal(size=(17, ld)).astype(dtype)
    wo = 2 * ld  # the layer's rows start two rows into the flat buffer
    W = rng.normal(size=wo + 12 * ld).astype(dtype)
    b = rng.normal(size=12).astype(dtype)
    D = rng.normal(size=(17, 12)).astype(dtype)
    tol = TOL[dtype]
    for lo, hi in [(0, 1), (0, 2), (0, 3), (1, 6), (0, 7), (3, 12), (0, 9)]:
        for s0, s1 in [(0, 1), (0, 4), (2, 7), (0, 10), (1, 13), (0, 17)]:
            rows = W[wo:wo + 12 * ld].reshape(12, ld)[lo:hi]
            Z = np.full((17, 12), 7.0, dtype)
            B._forward_units(x, s0, s1, ld, W, wo, b, lo, hi, dt(0.5), Z)
            np.testing.assert_allclose(Z[s0:s1, lo:hi], 0.5 * x[s0:s1] @ rows.T + b[lo:hi], **tol)
            untouched = np.ones_like(Z, bool)
            untouched[s0:s1, lo:hi] = False
            assert (Z[untouched] == 7.0).all()  # nothing written outside the block
            P = W.copy()
            B._accumulate_units(x, s0, s1, ld, P, wo, D, lo, hi, dt(-0.25))
            got = P[wo:wo + 12 * ld].reshape(12, ld)
            np.testing.assert_allclose(got[lo:hi], rows - 0.25 * D[s0:s1, lo:hi].T @ x[s0:s1], **tol)
            rest = np.ones(12, bool)
            rest[lo:hi] = False
            assert (got[rest] == W[wo:wo + 12 * ld].reshape(12, ld)[rest]).all() and (P[:wo] == W[:wo]).all()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden_units,bs,fit", [(7, 5, {}), (13, 10, dict(momentum=0.5, weight_decay=0.01)),
                                                 (30, 4, dict(optimizer=fb.SGD(0.05, reduction="sum")))], ids=str)
def test_two_threads_match_one_thread(dtype, hidden_units, bs, fit):
    X, y = data(n=47)
    kw = dict(sizes=(12, hidden_units, 5), batch_size=bs, X=X, y=y, epochs=2)
    one = train(NumbaBackend(dtype, threads=1), dtype, **kw, **dict(fit))
    two = train(NumbaBackend(dtype, threads=2), dtype, **kw, **dict(fit))
    assert two[2].backend.threads == 2
    assert_same(two, one, dtype)
    assert_same(two, train("numpy", dtype, **kw, **dict(fit)), dtype)


@pytest.mark.parametrize("sizes", [(12, 7, 5), (12, 40, 6, 5)], ids=str)
def test_two_threads_with_frozen_layer_softmax_and_depth(sizes):
    kw = dict(sizes=sizes, hidden="tanh", out="softmax", loss="cross_entropy", frozen=("b",), momentum=0.5)
    assert_same(train(NumbaBackend("float64", threads=2), "float64", **kw), train("numpy", "float64", **kw), "float64")


# layers of GEMM_UNITS (float32 on AVX-512: GEMM_UNITS_32) or more on batches of GEMM_ROWS or more: the dense epochs' two big products by
# BLAS's gemm, the narrow layers above by the blocked loops (a short last batch, units split between
# two workers, uint8 scaling, padded rows of every width; each optimiser)
GEMM_FITS = [lambda: dict(), lambda: dict(momentum=0.9, weight_decay=0.01),
             lambda: dict(optimizer=fb.Adam(0.01, weight_decay=1e-3)),
             lambda: dict(optimizer=fb.SGD(0.1, momentum=0.8, nesterov=True)),
             lambda: dict(frozen=("b",), momentum=0.5)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("threads,members,sparse", [(1, 1, False), (2, 1, False), (2, 3, False), (1, 1, True),
                                                    (2, 1, True)], ids=["1t", "2t", "members", "sparse-1t", "sparse-2t"])
@pytest.mark.parametrize("fit", GEMM_FITS, ids=["sgd", "momentum-decay", "adam", "nesterov", "frozen-b"])
def test_large_batches_take_the_products_from_blas_and_match_numpy(dtype, threads, members, sparse, fit,
                                                                    monkeypatch):
    from fastbp.kernels import _nb_blocked as KP
    from fastbp.kernels import numba_backend as NB

    from threadpoolctl import threadpool_info

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    import scipy.linalg.cython_blas  # noqa: F401  (loaded before counting the libraries' threads)
    before = blas_threads()
    fit = fit()  # (optimisers keep their state: a new one per test)
    size = np.dtype(dtype).itemsize
    bs, wide = KP.GEMM_ROWS + 3, (KP.GEMM_UNITS_32 if size == 4 else KP.GEMM_UNITS) + 5
    assert KP.gemm_pays(bs, wide, size) and not KP.gemm_pays(bs, 6, size) and not KP.gemm_pays(bs - 4, wide, size)
    assert not KP.gemm_pays(bs, wide - 6, size)
    X, y = data(n=3 * bs - 5, n_in=37, n_out=6)  # two full batches and a short one
    kw = dict(sizes=(37, wide, wide, 6), hidden="tanh", out="softmax", loss="cross_entropy", batch_size=bs, X=X, y=y,
              lr=0.3, **dict(fit))
    ref = train("numpy", dtype, **dict(kw, **{k: v.fresh() for k, v in fit.items() if k == "optimizer"}))
    used = []
    stock = NB.one_blas_thread
    monkeypatch.setattr(NB, "one_blas_thread", lambda gemm: used.append(gemm) or stock(gemm))
    backend = NumbaBackend(dtype, threads=threads, sparse=sparse)  # (sparse: the layers above by BLAS)
    # Adam divides by sqrt(v) + eps: where v is small, float32's rounding (another summation order)
    # moves a weight by more than the plain tolerance
    scale = 5.0 if dtype == "float32" and isinstance(fit.get("optimizer"), fb.Adam) else 1.0
    if members == 1:
        fused = train(backend, dtype, **kw)
        assert fused[0]["engine"] == f"numba-{'sparse' if sparse else 'fused'}-{threads}t"
        assert_same(fused, ref, dtype, scale)
    else:
        nets = [make_net(backend, dtype, [37, wide, wide, 6], "tanh", "softmax", "cross_entropy", kw.get("frozen", ()),
                         seed=0) for _ in range(members)]
        opts = [fit["optimizer"].fresh() if "optimizer" in fit else None for _ in nets]
        extra = {k: v for k, v in fit.items() if k not in ("optimizer", "frozen")}
        h = fb.Ensemble(nets).fit(X, y, epochs=2, batch_size=bs, lr=0.3, optimizer=opts[0] and opts, **extra)
        assert h["engine"] == "numba-members-2t"
        for k, net in enumerate(nets):  # each member as the lone network
            assert_same(({"loss": np.asarray(h["loss"])[:, k]}, net.get_params()), ref, dtype, scale)
    assert used[-2:] == [True, True]  # both epochs by BLAS, on one thread per worker (the warmup: 2 rows)
    assert blas_threads() == before  # and BLAS's threads given back afterwards


def test_unsupported_configuration_falls_back_to_per_batch_kernels(monkeypatch):
    calls = []
    original = NumbaBackend.make_plan

    def no_plan(self, *args, **kwargs):
        calls.append(original(self, *args, **kwargs) is not None)  # it would have been covered
        return None

    monkeypatch.setattr(NumbaBackend, "make_plan", no_plan)
    fallback = train("numba", "float64", momentum=0.5)
    monkeypatch.undo()
    assert calls and all(calls)
    assert_same(fallback, train("numpy", "float64", momentum=0.5), "float64")


def test_warmup_reports_seconds_and_leaves_weights_alone():
    net = make_net("numba", "float32", [12, 7, 5], "sigmoid", "sigmoid", "quadratic")
    before = net.get_params()
    X, y = data()
    be = net.backend
    seconds = be.warmup(net.layers, "quadratic", X, be.asarray(np.eye(5)[y]), 10, fb.SGD(0.5))
    assert isinstance(seconds, float) and seconds >= 0
    for p, q in zip(before, net.get_params()):
        np.testing.assert_array_equal(p["W"], q["W"])
        np.testing.assert_array_equal(p["b"], q["b"])
    history = net.fit(X, y, epochs=1)
    assert history["compile_seconds"] >= 0


@pytest.mark.parametrize("sparse", [False, True])
def test_short_compiled_epochs_run_on_the_calling_thread_and_train_as_on_a_worker(sparse, monkeypatch):
    import fastbp.kernels.numba_backend as NB

    rng = np.random.default_rng(3)
    X = (rng.random((30, 40)) < 0.3) * rng.integers(1, 256, (30, 40))
    X, y = X.astype(np.uint8), rng.integers(0, 4, 30)
    workers = []
    real = NB.run_workers
    monkeypatch.setattr(NB, "run_workers", lambda targets, *a, **k: (workers.append(len(targets)),
                                                                      real(targets, *a, **k))[1])

    def fit(inline_flops):
        monkeypatch.setattr(NB, "INLINE_FLOPS", inline_flops)
        workers.clear()
        net = fb.Network.from_sizes([40, 9, 4], backend=get_backend("numba", sparse=sparse), seed=1)
        history = net.fit(X, y, epochs=4, batch_size=7, momentum=0.5)
        return net, history, list(workers)

    limit = NB.INLINE_FLOPS
    threaded, h_threaded, w_threaded = fit(0.0)
    inline, h_inline, w_inline = fit(limit)
    assert w_threaded == [1] * 5  # the warmup and each epoch on a worker
    assert w_inline == [], "compiled by the first fit, the short epochs (and the warmup) started threads"
    assert h_inline["engine"] == h_threaded["engine"]
    assert h_inline.loss == h_threaded.loss
    for p, q in zip(threaded.get_params(), inline.get_params()):
        np.testing.assert_array_equal(p["W"], q["W"])
        np.testing.assert_array_equal(p["b"], q["b"])
    flops = 6.0 * X.shape[0] * (40 * 9 + 9 * 4)  # an epoch's: at the limit, here; over it, on a worker
    assert fit(flops)[2] == []
    assert fit(flops - 1)[2] == [1] * 4  # (the warmup's two samples: here)


def test_a_callbacks_changes_reach_the_next_epoch_and_the_plan_is_made_again_only_when_it_must(monkeypatch):
    """After each epoch's callback the plan is filled again from the layers (in place), or made
    anew when the callback changed what it was built for (here: a layer frozen)."""
    import fastbp.kernels.numba_backend as NB

    built = []
    real = NB.build_plan
    monkeypatch.setattr(NB, "build_plan", lambda *a, **k: built.append(1) or real(*a, **k))
    rng = np.random.default_rng(5)
    X, y = rng.random((50, 12)), rng.integers(0, 3, 50)

    def run(backend):
        net = fb.Network.from_sizes([12, 8, 3], backend=get_backend(backend, dtype="float64"), seed=2)

        def callback(epoch, history):
            layer = net.layers[0]
            if epoch == 0:
                layer.W *= 0.5  # in place
            if epoch == 2:
                layer.frozen = frozenset({"b"})
            if epoch == 3:
                net.optimizer.lr = 0.05

        net.fit(X, y, epochs=6, batch_size=8, lr=0.3, momentum=0.7, callback=callback)
        return net

    fused, reference = run("numba"), run("numpy")
    assert len(built) == 2, "the plan was made anew after callbacks that changed only values"
    for p, q in zip(fused.get_params(), reference.get_params()):
        np.testing.assert_allclose(p["W"], q["W"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(p["b"], q["b"], rtol=1e-10, atol=1e-12)


def test_threads_argument_is_checked():
    assert get_backend("numba", "float32").threads == 1
    assert get_backend("numba", "float32", threads=2).threads == 2
    assert get_backend("numba", "float32", threads=5).threads == 5  # ensembles: a worker per member
    with pytest.raises(ValueError, match="threads: expected a positive integer, got 0"):
        NumbaBackend("float32", threads=0)
    with pytest.raises(TypeError, match="threads"):
        NumbaBackend("float32", threads="2")
    with pytest.raises(ValueError, match="dtype"):
        NumbaBackend("int8")


def test_registry_and_info():
    assert fb.kernels.available("numba")
    assert NumbaBackend.is_available()
    info = NumbaBackend.info()
    assert {"numba", "cpu_name", "NUMBA_CPU_FEATURES"} <= set(info)


def test_sigmoid_saturates_without_overflow():
    nb = get_backend("numba", "float32")
    z = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype=np.float32)
    _, a = nb.forward(z, np.eye(5, dtype=np.float32), np.zeros(5, np.float32), Activation("sigmoid"))
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-30)


def test_sgd_update_in_place_on_a_strided_parameter():
    nb, ref = get_backend("numba", "float64"), get_backend("numpy", "float64")
    rng = np.random.default_rng(3)
    base = rng.normal(size=(4, 6))
    p, g = base[:, ::2], rng.normal(size=(4, 3))
    expected = p.copy()
    ref.sgd_update(expected, g, None, 0.1, 0.0, 0.01)
    nb.sgd_update(p, g, None, 0.1, 0.0, 0.01)
    np.testing.assert_allclose(base[:, ::2], expected, rtol=1e-12)


def test_sgd_update_rejects_gradients_and_velocities_of_another_shape():
    nb = get_backend("numba", "float64")
    p = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"g: expected shape \(3, 4\).*got \(12, 1\)"):
        nb.sgd_update(p, np.ones((12, 1)), None, 0.1)
    with pytest.raises(ValueError, match=r"v: expected shape \(3, 4\).*got \(3,\)"):
        nb.sgd_update(p, np.ones((3, 4)), np.zeros(3), 0.1, momentum=0.9)
    assert (p == 1).all()  # nothing was written


def test_the_kernel_cache_is_keyed_on_every_kernel_source(tmp_path):
    """A caller's cached machine code holds its callees from other modules: an edit of one kernel
    module (a git pull) must recompile every kernel, not leave the callers' old code in use."""
    import shutil

    from fastbp.kernels import _nb_common as C, _nb_epoch as F, _nb_sparse as S

    copy = tmp_path / "kernels"
    shutil.copytree(C.KERNELS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert C.kernels_stamp(str(copy)) == C.KERNELS_STAMP
    (copy / "notes.txt").write_text("not a kernel source")
    assert C.kernels_stamp(str(copy)) == C.KERNELS_STAMP
    (copy / "_nb_optim.py").write_text((copy / "_nb_optim.py").read_text() + "\n# an edit of a callee\n")
    assert C.kernels_stamp(str(copy)) != C.KERNELS_STAMP
    for dispatcher in (S.train_epoch_sparse, F.train_epoch):  # the callers' cache entries carry the stamp
        locator = dispatcher._cache._impl.locator
        assert isinstance(locator, C._KernelsStamp) and locator.get_source_stamp()[1] == C.KERNELS_STAMP


def test_sigmoid_like_compiles_only_the_sigmoid_of_the_arrays_precision():
    """A float32 kernel's sigmoid is the float32 one, and the float64 one is not compiled into it
    (a branch on the array's itemsize compiled both into every caller)."""
    from numba import njit

    from fastbp.kernels import _nb_math as KM

    @njit
    def f(z, a):
        return KM.sigmoid_like(z, a)

    a32, a64 = np.zeros(1, np.float32), np.zeros(1, np.float64)
    for z, a, own, other in [(np.float32(0.7), a32, "sigmoid32", "sigmoid64"), (0.7, a64, "sigmoid64", "sigmoid32")]:
        value = f(z, a)
        assert value == getattr(KM, own)(z)
        assert (float(np.float32(value)) == value) == (a.dtype == np.float32)  # computed in a's precision
        assert abs(float(value) - 1 / (1 + np.exp(-0.7))) < 1e-6
        llvm = f.inspect_llvm(f.signatures[-1])
        assert own in llvm and other not in llvm


def test_activation_derivatives_are_computed_in_the_activations_precision():
    """dact's value has the dtype of a = f(z) for every code: a float64 one (an int literal in its
    arithmetic once made every float32 derivative float64) turns the float32 delta loops into
    conversions to double and back."""
    from numba import njit, types

    from fastbp.kernels import _nb_math as KM
    from fastbp.kernels.ops import ACT_CODES

    @njit
    def f(z, a, code, slope):
        return KM.dact(z, a, code, slope)

    for T in (np.float32, np.float64):
        for name, code in ACT_CODES.items():
            value = f(T(0.3), T(0.6), code, T(0.01))
            assert isinstance(value, float)
            returned = f.overloads[f.signatures[-1]].signature.return_type
            assert returned == (types.float32 if T == np.float32 else types.float64), name
            expected = {"sigmoid": 0.6 * 0.4, "tanh": 1 - 0.36, "exp": 0.6}.get(name, 1.0)
            assert abs(value - expected) < 1e-6, name


def test_flat_views_contiguous_rows_and_the_flat_kernels_call_no_reshape():
    """``_flat`` is a 1-D view of an array's contiguous rows (a slice of a 3-D buffer's leading
    axes included): it reads and writes the array itself. The kernels that loop over whole rows
    flat use it instead of ``reshape``, whose C helper ran on every call and whose module a cached
    kernel imported when it loaded."""
    from numba import njit, types

    from fastbp.kernels import _nb_math as KM
    from fastbp.kernels._nb_intrinsics import _flat

    @njit
    def twice_rows(B, l, s0, s1):
        v = _flat(B[l, s0:s1])
        for i in range(v.shape[0]):
            v[i] *= 2
        return v.shape[0], v[0]

    B = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    expected = B.copy()
    expected[1, 1:4] *= 2
    assert twice_rows(B, 1, 1, 4) == (12, 2 * 24.0)
    np.testing.assert_array_equal(B, expected)  # only those rows, in place

    row = types.Array(types.float32, 2, "C")
    argtypes = (row, row, types.int64, types.int64, types.int64, types.float32)
    for kernel in (KM.activate_full, KM.output_deltas):  # compiled afresh (a cached one keeps no IR)
        fresh = njit(kernel.separate.variant(()).dispatcher.py_func)
        sig = argtypes if kernel is KM.activate_full else (row, row, row, row, types.int64, types.int64,
                                                           types.int64, types.float32, types.int64, types.float32)
        fresh.compile(sig)
        llvm = fresh.inspect_llvm(sig)
        assert "fmul" in llvm  # (its own code is there)
        assert "nocopy_reshape" not in llvm and "arrayobj" not in llvm, kernel


def test_flat_refuses_arrays_that_are_not_c_contiguous_and_keeps_read_only_views_read_only():
    """A strided slice would be read past its own elements, so it is refused while typing; a
    read-only array's view stays read-only (a write to it does not compile)."""
    from numba import njit
    from numba.core.errors import TypingError

    from fastbp.kernels._nb_intrinsics import _flat

    @njit
    def total(a):
        v = _flat(a)
        t = 0.0
        for i in range(v.shape[0]):
            t += v[i]
        return t

    @njit
    def poke(a):
        _flat(a)[0] = 1.0

    B = np.arange(12.0).reshape(3, 4)
    assert total(B) == B.sum()
    with pytest.raises(TypingError, match="C-contiguous"):
        total(B[:, 1:])
    r = np.zeros((2, 2))
    r.flags.writeable = False
    with pytest.raises(TypingError):
        poke(r)
    assert r[0, 0] == 0.0


def test_rows_is_a_view_of_rows_lo_to_hi_of_a_c_array_and_refuses_other_layouts():
    """``_rows(a, lo, hi)`` is ``a[lo:hi]`` without Numba's slice (which clamps and wraps its
    ends): the same elements, shape and strides, written through; 1-D to 3-D; empty when lo ==
    hi; strided arrays are refused while typing."""
    from numba import njit
    from numba.core.errors import TypingError

    from fastbp.kernels._nb_intrinsics import _rows

    @njit
    def rows(a, lo, hi):
        v = _rows(a, lo, hi)
        return v.shape, v.strides, v.size, v

    @njit
    def double_rows(B, l, lo, hi):
        v = _rows(B[l], lo, hi)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                v[i, j] *= 2

    for a in (np.arange(7.0), np.arange(24, dtype=np.float32).reshape(6, 4), np.arange(60).reshape(5, 3, 4)):
        for lo, hi in ((0, len(a)), (1, 3), (2, 2), (len(a) - 1, len(a))):
            shape, strides, size, v = rows(a, lo, hi)
            assert shape == a[lo:hi].shape and strides == a[lo:hi].strides and size == a[lo:hi].size
            np.testing.assert_array_equal(v, a[lo:hi])
    B = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    expected = B.copy()
    expected[1, 2:4] *= 2
    double_rows(B, 1, 2, 4)
    np.testing.assert_array_equal(B, expected)
    with pytest.raises(TypingError, match="C-contiguous"):
        rows(np.arange(12.0).reshape(3, 4)[:, ::2], 0, 1)


def test_the_kernels_min2_and_max2_are_pythons_min_and_max_of_two_and_compile_nothing_apart():
    """min2/max2 (the kernels' min and max of two numbers) give what Python's min and max give:
    ints, floats, the two mixed (the common type), NaN in either place, signed zeros; and they
    compile no function of their own (Numba's min and max compile one per pair of types)."""
    from numba import njit
    from numba.core import event
    from numba.core.errors import TypingError

    from fastbp.kernels._nb_intrinsics import max2, min2

    @njit
    def both(a, b):
        return min2(a, b), max2(a, b)

    nan = float("nan")
    pairs = [(3, 5), (5, 3), (-2, -2), (1.5, -0.5), (2, 2.5), (2.5, 2), (nan, 1.0), (1.0, nan), (nan, nan),
             (0.0, -0.0), (-0.0, 0.0), (np.float32(1.25), np.float32(-3.0)), (np.float32(1.5), 2.0)]
    compiled = []

    class Listener(event.Listener):
        def on_start(self, e):
            compiled.append(e.data["dispatcher"].py_func.__name__)

        def on_end(self, e):
            pass

    with event.install_listener("numba:compile", Listener()):
        for a, b in pairs:
            got = both(a, b)
            for g, want in zip(got, (min(a, b), max(a, b))):
                assert (np.isnan(g) and np.isnan(want)) or (g == want and np.signbit(g) == np.signbit(want)), (a, b)
            assert type(got[0]) is type(got[1])
    assert set(compiled) == {"both"}, compiled
    assert isinstance(both(2, 3)[0], int) and isinstance(both(2, 3.0)[0], float)
    with pytest.raises(TypingError, match="two numbers"):
        both(np.zeros(2), 1.0)


def test_the_epochs_threads_are_kept_between_calls_with_sigint_blocked_and_errors_reported():
    """run_workers hands its callables to kept threads (starting two threads per epoch cost as
    much as a short epoch's maths): a few threads serve call after call (one may still be on its
    way back to the idle ones when the next call comes), each with SIGINT blocked (a Ctrl-C goes
    to the main thread), also when the caller is not the main thread; a worker's exception
    reaches the caller; none is busy after; an idle thread holds nothing of its last job."""
    import gc
    import signal
    import threading
    import weakref

    import fastbp.kernels.numba_backend as NB

    stop = NB._aligned_zeros(16, np.int64)
    seen = []

    def work():
        blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        seen.append((threading.current_thread(), threading.current_thread().name, blocked))  # (held: not reused)

    for _ in range(20):
        NB.run_workers([work, work], stop)
    assert len(seen) == 40 and all(blocked for *_, blocked in seen)
    assert len({id(thread) for thread, *_ in seen}) <= 4, "a thread per call: the threads are not kept"
    assert all(name.startswith("fastbp-numba-") for _, name, _ in seen)

    def boom():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        NB.run_workers([work, boom], stop)
    assert NB.busy_workers() == 0
    caller = threading.Thread(target=lambda: [NB.run_workers([work, work, work], stop) for _ in range(3)])
    caller.start()
    caller.join(30)
    assert not caller.is_alive()
    assert len(seen) == 40 + 1 + 9 and all(blocked for *_, blocked in seen)
    assert len({id(thread) for thread, *_ in seen}) <= 7
    assert NB.busy_workers() == 0

    class Data:  # what an epoch's closure holds: the plan, X, Y
        pass

    data = Data()
    alive = weakref.ref(data)
    NB.run_workers([lambda d=data: d, lambda d=data: d], stop)  # (held by the closures, not a cell)
    del data
    gc.collect()
    assert alive() is None, "an idle kept thread holds its last job's data"


def test_a_job_that_raises_past_its_guard_ends_its_thread_and_the_next_call_runs():
    """A job's exception outside run_workers' guard (a misuse) ends its thread, which is never
    left among the idle ones: the next call's work is run, not queued for a dead thread."""
    import threading

    import fastbp.kernels.numba_backend as NB

    released = threading.Lock()
    released.acquire()

    def raw():
        raise RuntimeError("unguarded")

    job = NB._Job(raw, threading.Event(), released)
    job.start()
    assert released.acquire(timeout=10) and job.finished.is_set() and not job.is_alive()
    out = []
    caller = threading.Thread(target=lambda: [NB.run_workers([lambda: out.append(1)] * 2, NB._aligned_zeros(16, np.int64))
                                              for _ in range(5)])
    caller.start()
    caller.join(20)
    assert not caller.is_alive() and out == [1] * 10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_starts_its_own_epoch_threads():
    """The parent's kept threads do not exist in a forked child (a Dask or multiprocessing worker):
    the child makes its own instead of queueing work for threads that never run it, and does not
    wait for a job the parent left running."""
    import threading

    import fastbp.kernels.numba_backend as NB

    stop = NB._aligned_zeros(16, np.int64)
    NB.run_workers([lambda: None, lambda: None], stop)  # the parent keeps two idle threads
    # and a job left running (as an interrupted first compile leaves one), which the child's
    # next epoch would wait for: in the child no thread runs it
    block, released = threading.Event(), threading.Lock()
    released.acquire()
    left = NB._Job(lambda: block.wait(60), threading.Event(), released)
    left.start()
    NB._LEFT_RUNNING.append(left)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        try:
            out = []
            NB.finish_left_running(stop)
            NB.run_workers([lambda: out.append(1), lambda: out.append(2)], stop)
            os.write(w, str(sorted(out)).encode())
        finally:
            os._exit(0)
    os.close(w)
    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's run_workers never returned")
        time.sleep(0.01)
    block.set()
    NB.finish_left_running(stop)
    assert not NB._LEFT_RUNNING
    with os.fdopen(r) as f:
        assert f.read() == "[1, 2]"
