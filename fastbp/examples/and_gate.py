"""AND gate: a 2-4-1 sigmoid network trained with binary cross-entropy on summed gradients.

Source: the textbook's layer classes ``FC``, ``Loss`` and ``Net`` (a fully connected layer with
weights drawn uniformly from [0, 1) and zero biases, a sigmoid + binary cross-entropy loss, and a
net that adds up the gradients of the whole batch before each update). Inputs [[0,0], [0,1],
[1,0], [1,1]], targets [0, 0, 0, 1], learning rate 0.1, 1,000 full-batch updates.

Published figures: the outputs end below 0.05 for the three 0-targets and above 0.95 for the
1-target.

In fastbp: ``fb.SGD(lr=0.1, reduction="sum")`` gives the textbook's summed (not averaged)
gradients, and ``batch_size=None`` full-batch updates. The uniform weights come from NumPy's
``default_rng(seed)`` instead of the textbook's unseeded ``np.random.rand``, so the exact outputs
depend on ``--seed``; the thresholds hold for every seed we tried (0..199). The printed loss is the
mean per-sample cross-entropy.
"""
from __future__ import annotations

import numpy as np

import fastbp as fb

from ._common import add_backend, parser

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
Y = np.array([[0], [0], [0], [1]], dtype=np.float64)


def build_network(seed=0, backend="numpy"):
    """2-4-1 sigmoid, weights uniform in [0, 1), biases zero, float64."""
    rng = np.random.default_rng(seed)
    layers = [fb.Dense(2, 4, "sigmoid", init=rng.uniform(size=(2, 4)), bias_init="zeros"),
              fb.Dense(4, 1, "sigmoid", init=rng.uniform(size=(4, 1)), bias_init="zeros")]
    return fb.Network(layers, loss="binary_cross_entropy", backend=backend, dtype="float64", seed=seed)


def train(epochs=1000, lr=0.1, seed=0, backend="numpy"):
    """Train the AND gate; returns ``(net, history)``."""
    net = build_network(seed, backend)
    history = net.fit(X, Y, epochs=epochs, batch_size=None, optimizer=fb.SGD(lr, reduction="sum"),
                      shuffle=False)
    return net, history


def main(argv=None):
    p = parser("and_gate", __doc__)
    p.add_argument("--epochs", type=int, default=1000, help="full-batch updates (default 1000)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the uniform initial weights (default 0)")
    add_backend(p, "numpy")
    args = p.parse_args(argv)
    net, history = train(args.epochs, args.lr, args.seed, args.backend)
    print(f"AND gate, 2-4-1 sigmoid, binary cross-entropy, summed gradients, lr {args.lr}, "
          f"{args.epochs} updates (seed {args.seed})")
    print(f"loss (mean per sample): before the first update {history.loss[0]:.6f}, last {history.loss[-1]:.6f}")
    for x, t, a in zip(X.astype(int), Y[:, 0].astype(int), net.predict_proba(X)[:, 0]):
        goal = "< 0.05" if t == 0 else "> 0.95"
        ok = a < 0.05 if t == 0 else a > 0.95
        print(f"  {x[0]} AND {x[1]} -> {a:.6f}   (target {t}, textbook {goal}: {'yes' if ok else 'NO'})")
    return 0
