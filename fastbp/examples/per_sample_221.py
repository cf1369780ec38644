"""Per-sample SGD on a 2-2-1 network: guessing gender from weight and height.

Source: Victor Zhou, "Machine Learning for Beginners: An Introduction to Neural Networks" (2019).
Four people, inputs (weight - 135 lb, height - 66 in) = [[-2, -1], [25, 6], [17, 4], [-15, -6]],
targets [1, 0, 0, 1] (1 = female); a 2-2-1 sigmoid network with a bias on every neuron, weights
and biases drawn from N(0, 1); MSE loss; learning rate 0.1; 1,000 epochs, each visiting the four
examples in order with one update per example.

Published figures: Emily [-7, -3] comes out at 0.951 (female), Frank [20, 2] at 0.039 (male).
The test checks the textbook's claim, above 0.9 and below 0.1.

In fastbp: ``fit(batch_size=1, shuffle=False)`` is the source's per-example loop, loss ``"mse"``
(mean over outputs of (a - y)^2, derivative 2(a - y) as in the source) and ``init="normal"``
(weights and biases N(0, 1), as ``np.random.normal()``). The random numbers come from
``default_rng(seed)`` instead of the source's unseeded generator, so the exact outputs depend on
``--seed``; the thresholds hold for every seed we tried (0..99).
"""
from __future__ import annotations

import numpy as np

import fastbp as fb

from ._common import add_backend, parser

X = np.array([[-2, -1], [25, 6], [17, 4], [-15, -6]], dtype=np.float64)
Y = np.array([[1], [0], [0], [1]], dtype=np.float64)
NEW = {"Emily": [-7, -3], "Frank": [20, 2]}  # published: 0.951 and 0.039


def build_network(seed=0, backend="numpy"):
    layers = [fb.Dense(2, 2, "sigmoid", init="normal"), fb.Dense(2, 1, "sigmoid", init="normal")]
    return fb.Network(layers, loss="mse", backend=backend, dtype="float64", seed=seed)


def train(epochs=1000, lr=0.1, seed=0, backend="numpy"):
    """Train on the four people; returns ``(net, history, {name: output})`` for Emily and Frank."""
    net = build_network(seed, backend)
    history = net.fit(X, Y, epochs=epochs, batch_size=1, lr=lr, shuffle=False)
    outputs = net.predict_proba(np.array(list(NEW.values()), dtype=np.float64))[:, 0]
    return net, history, dict(zip(NEW, outputs))


def main(argv=None):
    p = parser("per_sample_221", __doc__)
    p.add_argument("--epochs", type=int, default=1000, help="epochs of one update per example (default 1000)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the N(0, 1) initial parameters (default 0)")
    add_backend(p, "numpy")
    args = p.parse_args(argv)
    net, history, outputs = train(args.epochs, args.lr, args.seed, args.backend)
    print(f"2-2-1 sigmoid, MSE, per-sample SGD, lr {args.lr}, {args.epochs} epochs (seed {args.seed})")
    for epoch in range(0, len(history.loss), max(1, len(history.loss) // 10)):
        print(f"  epoch {epoch:4d}  loss {history.loss[epoch]:.4f}")
    for (name, x), published in zip(NEW.items(), (0.951, 0.039)):
        print(f"{name} {x}: {outputs[name]:.3f} ({'F' if outputs[name] >= 0.5 else 'M'}; published {published})")
    return 0
