"""fastbp.sklearn against scikit-learn: the same constructor calls, side by side in one run.

For each dataset, solver and seed, ``MLPClassifier(**params)`` from scikit-learn and from
fastbp.sklearn are fitted on the same data (float32 input), the two taking turns seed by seed;
the table gives test accuracy (mean and spread over the seeds) and fit time (median), and
fastbp's speed-up. Threads: ``--threads 1,2`` runs each with that many threads (scikit-learn:
BLAS threads through threadpoolctl; fastbp: the numba backend's ``threads`` and the same BLAS
limit).

    python scripts/bench_sklearn.py                        # digits, a Fashion-MNIST subset, 60k
    python scripts/bench_sklearn.py --datasets digits --seeds 5 --solvers adam,sgd,lbfgs
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def load(name):
    """(X_train, y_train, X_test, y_test) as float32, standardised for digits, /255 for images."""
    if name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        X, y = load_digits(return_X_y=True)
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0)
        scaler = StandardScaler().fit(X_tr)
        return (scaler.transform(X_tr).astype(np.float32), y_tr, scaler.transform(X_te).astype(np.float32), y_te)
    import fastbp as fb

    data = fb.datasets.load_fashion_mnist()
    n = {"fashion-10k": 10000, "fashion-60k": 60000}[name]
    return (data.X_train[:n].astype(np.float32) / 255, data.y_train[:n],
            data.X_test.astype(np.float32) / 255, data.y_test)


def fit_once(library, params, data, threads):
    from threadpoolctl import threadpool_limits

    X_tr, y_tr, X_te, y_te = data
    if library == "sklearn":
        from sklearn.neural_network import MLPClassifier
        model = MLPClassifier(**params)
    else:
        import fastbp as fb
        from fastbp.sklearn import MLPClassifier
        model = MLPClassifier(**params, backend=fb.get_backend("numba", threads=threads))
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        model.fit(X_tr, y_tr)
        seconds = time.perf_counter() - t0
    return seconds, float(model.score(X_te, y_te)), int(model.n_iter_)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="digits,fashion-10k,fashion-60k")
    ap.add_argument("--solvers", default="adam,sgd,lbfgs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", default="1")
    ap.add_argument("--max-iter", type=int, default=None,
                    help="max_iter (default: scikit-learn's 200 on digits, 20 on the Fashion-MNIST sets)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    # a compile of fastbp's kernels (or a load from the cache) before any timing
    import fastbp as fb
    from fastbp.sklearn import MLPClassifier
    for t in sorted({int(t) for t in args.threads.split(",")}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for solver in args.solvers.split(","):
                MLPClassifier(solver=solver, max_iter=2, backend=fb.get_backend("numba", threads=t)).fit(
                    np.random.default_rng(0).random((300, 20), dtype=np.float32), np.arange(300) % 3)
    rows = []
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"command: python scripts/bench_sklearn.py {' '.join(argv or sys.argv[1:])}")
    print("| dataset | solver | threads | scikit-learn accuracy | fastbp accuracy | scikit-learn fit s | "
          "fastbp fit s | fastbp speed-up |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.datasets.split(","):
        data = load(name)
        max_iter = args.max_iter or (200 if name == "digits" else 20)
        for solver in args.solvers.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                result = {"sklearn": [], "fastbp": []}
                for seed in range(args.seeds):  # the two take turns, so that the machine's drift hits both
                    for library in result:
                        result[library].append(fit_once(library, dict(solver=solver, max_iter=max_iter,
                                                                       random_state=seed), data, threads))
                for library, runs in result.items():
                    rows.append(dict(dataset=name, solver=solver, threads=threads, library=library,
                                     seconds=[r[0] for r in runs], accuracy=[r[1] for r in runs],
                                     n_iter=[r[2] for r in runs]))

                def acc(lib):
                    a = [r[1] for r in result[lib]]
                    return f"{statistics.mean(a):.4f} ± {statistics.pstdev(a):.4f}"

                t_sk = statistics.median(r[0] for r in result["sklearn"])
                t_fb = statistics.median(r[0] for r in result["fastbp"])
                print(f"| {name} | {solver} | {threads} | {acc('sklearn')} | {acc('fastbp')} | {t_sk:.2f} | "
                      f"{t_fb:.2f} | {t_sk / t_fb:.2f}x |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
