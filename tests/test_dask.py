"""A hyperparameter sweep of fastbp.sklearn estimators on a dask.distributed cluster (two local
worker processes) through joblib's Dask backend gives the same results as the local run."""
import os

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed "
                                  "(pip install 'fastbp[distributed]')")
import joblib  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from fastbp.sklearn import MLPClassifier  # noqa: E402

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
