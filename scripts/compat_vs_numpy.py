"""The book's chapter 1 run through ``fastbp.compat.nielsen`` (float64, as the book) against a
careful NumPy float32 implementation of the same run, each a whole new process (imports, loading
the cached kernels, building the book's lists, 30 epochs, an evaluation after each), the two
taking turns; prints each run's wall time and the medians.

    python scripts/compat_vs_numpy.py [--rounds 3] [--epochs 30]

Data: the 10,000 MNIST test digits split 8,000 / 2,000 (``$FASTBP_MNIST_DIR``, default
``/work/shared/data/mnist``), as ``fastbp bench --dataset mnist-test``. The NumPy run: one
matrix product per layer per mini-batch of 10, float32 throughout, inputs scaled once, rows
gathered by a permutation per epoch; BLAS on one thread (its best at these sizes).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

COMMON = r"""
import os, sys, time
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, REPO)
from fastbp.bench import load
Xtr, ytr, Xte, yte = load("mnist-test")
"""

COMPAT = COMMON + r"""
import contextlib, io, random
import fastbp.compat.nielsen as network
E = np.eye(10)
training_data = [(x.reshape(784, 1) / 255.0, E[c].reshape(10, 1)) for x, c in zip(Xtr, ytr)]
test_data = [(x.reshape(784, 1) / 255.0, int(c)) for x, c in zip(Xte, yte)]
random.seed(0)
np.random.seed(0)
net = network.Network([784, 30, 10])
out = io.StringIO()
with contextlib.redirect_stdout(out):
    net.SGD(training_data, EPOCHS, 10, 3.0, test_data=test_data)
last = out.getvalue().strip().splitlines()[-1].split(": ")[1]
print(time.perf_counter() - t0, last)
"""

NUMPY = COMMON + r"""
X = Xtr.astype(np.float32) / np.float32(255)
Y = np.eye(10, dtype=np.float32)[ytr]
Xt = Xte.astype(np.float32) / np.float32(255)
rng = np.random.default_rng(0)
W1 = rng.standard_normal((784, 30)).astype(np.float32)
b1 = rng.standard_normal(30).astype(np.float32)
W2 = rng.standard_normal((30, 10)).astype(np.float32)
b2 = rng.standard_normal(10).astype(np.float32)
eta, bs = np.float32(3.0), 10

def sigmoid(z):
    return 1 / (1 + np.exp(-z))

for epoch in range(EPOCHS):
    order = rng.permutation(len(X))
    for s in range(0, len(X), bs):
        idx = order[s:s + bs]
        x, y = X[idx], Y[idx]
        a1 = sigmoid(x @ W1 + b1)
        a2 = sigmoid(a1 @ W2 + b2)
        d2 = (a2 - y) * a2 * (1 - a2)
        d1 = (d2 @ W2.T) * a1 * (1 - a1)
        c = eta / len(idx)
        W2 -= c * (a1.T @ d2)
        b2 -= c * d2.sum(0)
        W1 -= c * (x.T @ d1)
        b1 -= c * d1.sum(0)
    correct = int((sigmoid(sigmoid(Xt @ W1 + b1) @ W2 + b2).argmax(1) == yte).sum())
print(time.perf_counter() - t0, f"{correct} / {len(yte)}")
"""


def run(code, epochs, env):
    src = code.replace("REPO", repr(os.path.join(HERE, ".."))).replace("EPOCHS", str(epochs))
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=env, check=True)
    seconds, result = out.stdout.strip().split(" ", 1)
    return float(seconds), result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args(argv)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    run(COMPAT, 1, env)  # compiles (or loads) the kernels once, untimed
    times = {"compat": [], "numpy": []}
    for r in range(args.rounds):
        for name, code in (("compat", COMPAT), ("numpy", NUMPY)):
            seconds, result = run(code, args.epochs, env)
            times[name].append(seconds)
            print(f"round {r + 1}: {name:6s} {seconds:.2f} s (last epoch: {result})")
    c, n = statistics.median(times["compat"]), statistics.median(times["numpy"])
    print(f"median: fastbp.compat float64 {c:.2f} s, NumPy float32 {n:.2f} s; numpy / compat {n / c:.2f}")


if __name__ == "__main__":
    main()
