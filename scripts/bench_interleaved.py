"""Before/after speed of the numba engines, interleaved: two long-lived processes, one on this
checkout and one on another (``--base``, e.g. a ``git worktree`` of an older commit), each with
Fashion-MNIST 60k and the book's network (784-30-10 sigmoid, quadratic, batch 10), take turns to
train one timed epoch, ``--rounds`` times per configuration. On a noisy shared VM this cancels the
slow drifts that make separate bench.py runs incomparable; the median of the per-round ratios is
the figure to quote (run it once with ``--base`` pointing at this checkout to see the noise floor).

    git worktree add /tmp/base <commit>
    python scripts/bench_interleaved.py --base /tmp/base --rounds 16
    python scripts/bench_interleaved.py --base /tmp/base --configs float32:2:0.9:1,float32:2:0:4

A configuration is dtype:threads:momentum:members[:sparse] (members > 1: an fb.Ensemble; sparse: the
backend's ``sparse`` argument, auto, true or false; default auto). ``--dataset mnist-test``: the
MNIST test digits' first 8,000 (``--mnist``, the sparse engine's benchmark set) instead of
Fashion-MNIST. Clear both checkouts' ``kernels/__pycache__`` first when comparing kernels (the cache
is per checkout).

    python scripts/bench_interleaved.py --base /tmp/base --dataset mnist-test --configs float32:1:0:1:true
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(dataset, mnist):
    """The training inputs and labels of ``dataset`` (fashion, or mnist-test: 8,000 test digits)."""
    import numpy as np

    import fastbp as fb

    if dataset == "fashion":
        d = fb.datasets.load_fashion_mnist()
        return d.X_train, d.y_train
    X = fb.datasets.read_idx(os.path.join(mnist, "t10k-images-idx3-ubyte.gz"))
    y = fb.datasets.read_idx(os.path.join(mnist, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    return np.ascontiguousarray(X.reshape(len(X), -1))[:8000], y[:8000]


def worker(dtype, threads, momentum, members, sparse, dataset, mnist):
    import fastbp as fb

    X, y = load(dataset, mnist)
    sparse = {"auto": "auto", "true": True, "false": False}[sparse]
    try:
        be = fb.get_backend("numba", dtype=dtype, threads=threads, sparse=sparse)
    except TypeError:  # a checkout from before the sparse engine: only its dense engines exist
        if sparse is True:
            raise
        be = fb.get_backend("numba", dtype=dtype, threads=threads)
    model = (fb.Network.from_sizes([784, 30, 10], backend=be, seed=0) if members == 1 else
             fb.Ensemble.from_sizes([784, 30, 10], n_models=members, backend=be))
    lr = 0.3 if momentum else 3.0
    model.fit(X[:100], y[:100], epochs=1, lr=lr, momentum=momentum)  # compile or load
    print("ready", flush=True)
    for _ in sys.stdin:
        h = model.fit(X, y, epochs=1, lr=lr, momentum=momentum)
        print(h["seconds"][0], h["engine"], flush=True)


def package_path(checkout, tmp):
    """A folder whose ``fastbp`` is ``checkout``'s package with its kernels (as installed)."""
    pkg = os.path.join(tmp, os.path.basename(os.path.abspath(checkout)) or "checkout")
    shutil.copytree(os.path.join(checkout, "fastbp"), os.path.join(pkg, "fastbp"), symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    os.symlink(os.path.abspath(os.path.join(checkout, "kernels")), os.path.join(pkg, "fastbp", "kernels"))
    return pkg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", help="the other checkout (its fastbp/ and kernels/)")
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--configs", default="float32:1:0:1,float32:2:0:1,float64:1:0:1,float32:1:0.9:1,"
                                        "float32:2:0.9:1,float32:2:0:4")
    p.add_argument("--dataset", choices=("fashion", "mnist-test"), default="fashion")
    p.add_argument("--mnist", default=os.environ.get("FASTBP_MNIST_DIR", "/work/shared/data/mnist"))
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        dtype, threads, momentum, members, sparse = args.worker
        return worker(dtype, int(threads), float(momentum), int(members), sparse, args.dataset,
                      os.path.abspath(args.mnist))
    if not args.base:
        p.error("--base: expected the other checkout")
    for config in args.configs.split(","):  # (all checked before any worker starts)
        fields = config.split(":")
        if not 4 <= len(fields) <= 5 or (len(fields) == 5 and fields[4].lower() not in ("auto", "true", "false")):
            p.error(f"--configs: expected dtype:threads:momentum:members[:auto|true|false], got {config!r}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"new": package_path(HERE, tmp), "base": package_path(args.base, tmp)}
        for config in args.configs.split(","):
            dtype, threads, momentum, members, sparse = (config.split(":") + ["auto"])[:5]
            procs = {}
            for tag, path in paths.items():
                env = dict(os.environ, PYTHONPATH=path)
                procs[tag] = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", dtype, threads,
                                               momentum, members, sparse.lower(), "--dataset", args.dataset,
                                               "--mnist", os.path.abspath(args.mnist)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              text=True, env=env, cwd=tmp)
                if procs[tag].stdout.readline().strip() != "ready":
                    raise SystemExit(f"the {tag} worker did not start")
            times, engines = {"new": [], "base": []}, {}
            for r in range(args.rounds):
                for tag in ("new", "base") if r % 2 == 0 else ("base", "new"):
                    procs[tag].stdin.write("go\n")
                    procs[tag].stdin.flush()
                    seconds, engine = procs[tag].stdout.readline().split()
                    times[tag].append(float(seconds))
                    engines[tag] = engine
            for proc in procs.values():
                proc.stdin.close()
                proc.wait()
            ratios = [a / b for a, b in zip(times["new"], times["base"])]
            print(f"{config} ({engines['new']} / {engines['base']}): base {statistics.median(times['base']):.4f} "
                  f"s/epoch, new {statistics.median(times['new']):.4f}, median ratio new/base "
                  f"{statistics.median(ratios):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
