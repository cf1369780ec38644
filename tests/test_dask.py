"""Hyperparameter sweeps on a dask.distributed cluster (two local worker processes) give the same
results as the local run: fastbp.sklearn estimators through joblib's Dask backend, and packs of
configurations mapped over fastbp.sweep.train_pack (each pack one fb.Ensemble), whose members
also equal the lone networks."""
import os

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed "
                                  "(pip install 'fastbp[distributed]')")
import joblib  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

import fastbp as fb  # noqa: E402
from fastbp.sklearn import MLPClassifier  # noqa: E402
from fastbp.sweep import packs, train_pack  # noqa: E402

# One thread per worker process for every library that would start its own pool
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "NUMBA_NUM_THREADS")}


def sweep(X, y):
    estimator = MLPClassifier(hidden_layer_sizes=(16,), max_iter=4, random_state=0, backend="numpy",
                              dtype="float64")
    grid = {"learning_rate_init": [0.05, 0.5], "batch_size": [10, 50]}
    return GridSearchCV(estimator, grid, cv=3, n_jobs=-1).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_on_local_cluster_equals_local_run():
    X, y = load_digits(return_X_y=True)
    X, y = X[:600] / 16.0, y[:600]
    local = sweep(X, y)  # joblib's default backend, on this machine
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, env=ONE_THREAD,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        envs = client.run(lambda: {k: os.environ.get(k) for k in ONE_THREAD})
        assert len(envs) == 2 and all(env == ONE_THREAD for env in envs.values())
        with distributed.get_task_stream(client) as tasks, joblib.parallel_backend("dask"):
            remote = sweep(X, y)
        workers = {t["worker"] for t in tasks.data}
        assert workers and workers <= set(envs)  # the fits ran on the cluster's workers
    for key in ("mean_test_score", "split0_test_score", "split1_test_score", "split2_test_score"):
        np.testing.assert_allclose(remote.cv_results_[key], local.cv_results_[key], rtol=1e-12)
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(remote.best_estimator_.coefs_[0], local.best_estimator_.coefs_[0], rtol=1e-9)


def test_packs_of_configurations_on_local_cluster_equal_local_run_and_lone_networks():
    """The issue-12 way: each task trains one pack of configurations as one fb.Ensemble."""
    X, y = load_digits(return_X_y=True)
    X, y, Xv, yv = X[:400] / 16.0, y[:400], X[400:600] / 16.0, y[400:600]
    configs = [dict(lr=lr, momentum=mu, seed=seed) for lr in (0.05, 0.3) for mu in (0.0, 0.5) for seed in (0, 1)]
    pieces = packs(configs, 4)
    assert len(pieces) == 2 and all(len(p) == 4 for p in pieces)
    kw = dict(sizes=[64, 16, 10], epochs=3, batch_size=10, validation_data=(Xv, yv), activation="tanh",
              output_activation="softmax", loss="cross_entropy", backend="numpy", dtype="float64")
    local = [train_pack(p, X, y, **kw) for p in pieces]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, env=ONE_THREAD,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        workers = set(client.run(os.getpid))
        # the data goes to each worker once; unscattered, map() would ship it in the graph (and
        # distributed 2026.8 fails on map() keywords over 100 kB: AssertionError ts.priority)
        X_, y_, Xv_, yv_ = client.scatter([X, y, Xv, yv], broadcast=True)
        with distributed.get_task_stream(client) as tasks:
            futures = client.map(train_pack, pieces, X=X_, y=y_, **{**kw, "validation_data": (Xv_, yv_)})
            remote = client.gather(futures)
        ran = [t for t in tasks.data if t["key"].startswith("train_pack")]
        assert len(ran) == 2 and {t["worker"] for t in ran} <= workers  # one task per pack, on the workers
    assert len(remote) == 2 and [len(r) for r in remote] == [4, 4]
    for pack, here, there in zip(pieces, local, remote):
        for config, a, b in zip(pack, here, there):
            assert a["config"] == b["config"] == config
            assert b["diverged"] is None and b["val_accuracy"] == a["val_accuracy"]
            np.testing.assert_allclose(b["history"]["loss"], a["history"]["loss"], rtol=1e-12)
            net = fb.Network.from_sizes([64, 16, 10], seed=config["seed"], activation="tanh",
                                        output_activation="softmax", loss="cross_entropy", backend="numpy",
                                        dtype="float64")
            h = net.fit(X, y, epochs=3, batch_size=10, lr=config["lr"], momentum=config["momentum"],
                        validation_data=(Xv, yv))
            assert b["val_accuracy"] == h["val_accuracy"][-1]
            for p, q, r in zip(b["params"], a["params"], net.get_params()):
                for key in ("W", "b"):
                    np.testing.assert_allclose(p[key], q[key], rtol=1e-12, atol=1e-14)
                    np.testing.assert_allclose(p[key], r[key], rtol=1e-10, atol=1e-12)
