"""The sparse first layer against the dense one, side by side in one process: the book's network
(784-30-10 sigmoid, quadratic loss, lr 3.0, float32) on the MNIST test digits split 8,000 / 2,000,
and fastbp's default sparse="auto" against dense on Fashion-MNIST (50% nonzero).

    python scripts/bench_sparse.py                      # every row (about 3 minutes on 2 cores)
    python scripts/bench_sparse.py --rounds 15 --configs 1x10,2x10
    python scripts/bench_sparse.py --sweep 30,100 --configs 1x10,2x10   # the sparse="auto" threshold

Each row trains two networks of the same seed, one per engine, and alternates their epochs
(``--rounds`` rounds of one epoch each, after an untimed one), so both see the same state of a
noisy machine; the ratio is the median of the per-round ratios. Seconds per epoch are medians.
The last columns estimate the book's full run (60,000 MNIST digits, 30 epochs) from the time per
sample. Prints a Markdown table with the machine and date. ``--sweep H1,H2``: instead, the density at
which the sparse layer stops paying, on 10,000 Fashion-MNIST images thinned (pixels at or below a
threshold set to zero) to densities 0.50 down to 0.29, for those hidden sizes.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import fastbp as fb  # noqa: E402
from fastbp.bench import machine  # noqa: E402


def mnist_test(folder):
    X = fb.datasets.read_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))
    y = fb.datasets.read_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    X = np.ascontiguousarray(X.reshape(len(X), -1))
    return X[:8000], y[:8000], X[8000:], y[8000:]


def side_by_side(X, y, threads, batch_size, modes, rounds, hidden=30):
    """Seconds per epoch of each mode (the backend's ``sparse`` argument), epochs alternated."""
    nets = {m: fb.Network.from_sizes([X.shape[1], hidden, 10],
                                     backend=fb.get_backend("numba", threads=threads, sparse=m), seed=0) for m in modes}
    engines = {}
    for m, net in nets.items():
        engines[m] = net.fit(X, y, epochs=1, batch_size=batch_size, lr=3.0)["engine"]  # compile, untimed
    seconds = {m: [] for m in modes}
    for _ in range(rounds):
        for m, net in nets.items():
            seconds[m] += net.fit(X, y, epochs=1, batch_size=batch_size, lr=3.0)["seconds"]
    return seconds, engines, nets


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--configs", default="1x10,2x10,1x100,2x100,1x1000,2x1000", help="threads x batch size")
    p.add_argument("--mnist", default=os.environ.get("FASTBP_MNIST_DIR", "/work/shared/data/mnist"))
    p.add_argument("--no-fashion", action="store_true", help="skip the Fashion-MNIST auto-vs-dense rows")
    p.add_argument("--sweep", help="hidden sizes for the density sweep, e.g. 30,100")
    args = p.parse_args(argv)
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    if args.sweep:
        return sweep([int(h) for h in args.sweep.split(",")], configs, args.rounds)
    print(f"# fastbp sparse first layer, {datetime.datetime.now():%Y-%m-%d %H:%M}; {machine()[0]}, "
          f"{os.cpu_count()} cores; numba CPU {fb.get_backend('numba').info()['cpu_name']}")
    print(f"# command: python scripts/bench_sparse.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print("\n| data | threads | batch | dense s/epoch | sparse s/epoch | dense / sparse (median of rounds) | "
          "engines | test accuracy dense / sparse | book's 60k x 30 epochs, dense / sparse |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    X, y, Xt, yt = mnist_test(args.mnist)
    rows = [("MNIST test 8,000", X, y, Xt, yt, t, bs, (False, True)) for t, bs in configs]
    if not args.no_fashion:
        d = fb.datasets.load_fashion_mnist(download=False)
        Xf, yf = d.X_train.reshape(len(d.X_train), -1), d.y_train
        Xft, yft = d.X_test.reshape(len(d.X_test), -1), d.y_test
        rows += [("Fashion 60k, auto vs dense", Xf, yf, Xft, yft, t, 10, (False, "auto")) for t in (1, 2)]
    for name, X, y, Xt, yt, threads, bs, modes in rows:
        seconds, engines, nets = side_by_side(X, y, threads, bs, modes, args.rounds)
        a, b = (np.asarray(seconds[m]) for m in modes)
        ratio = float(np.median(a / b))
        accs = " / ".join(f"{nets[m].evaluate(Xt, yt)['accuracy']:.4f}" for m in modes)
        full = " / ".join(f"{np.median(s) / len(X) * 60000 * 30:.1f} s" for s in (a, b))
        print(f"| {name} | {threads} | {bs} | {np.median(a):.4f} | {np.median(b):.4f} | {ratio:.2f} | "
              f"{engines[modes[0]]} / {engines[modes[1]]} | {accs} | {full} |", flush=True)
    return 0


def sweep(hiddens, configs, rounds):
    d = fb.datasets.load_fashion_mnist(download=False)
    X0, y = d.X_train[:10000].reshape(10000, -1), d.y_train[:10000]
    print(f"# density sweep, {datetime.datetime.now():%Y-%m-%d %H:%M}; {machine()[0]}; Fashion-MNIST 10k thinned")
    print("\n| hidden | threads | batch | density | dense s/epoch | sparse s/epoch | dense / sparse |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for hidden in hiddens:
        for threads, bs in configs:
            for cut in (0, 20, 60, 100, 140):
                X = np.where(X0 > cut, X0, 0).astype(np.uint8)
                seconds, _, _ = side_by_side(X, y, threads, bs, (False, True), rounds, hidden)
                a, b = np.asarray(seconds[False]), np.asarray(seconds[True])
                print(f"| {hidden} | {threads} | {bs} | {np.count_nonzero(X) / X.size:.3f} | {np.median(a):.4f} | "
                      f"{np.median(b):.4f} | {np.median(a / b):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
