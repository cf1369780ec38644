"""The 2-2-2 worked example: one backpropagation step checked by hand, then 10,000.

Source: Matt Mazur, "A Step by Step Backpropagation Example" (2015). Two inputs (0.05, 0.10),
targets (0.01, 0.99); a hidden and an output layer of two sigmoid neurons; one bias per layer
(0.35 and 0.60) held fixed; loss 0.5 * sum (target - out)^2; learning rate 0.5; every update
uses the one example (full-batch gradient descent).

Weights, as named in the source (w1: input 1 -> hidden 1, w2: input 2 -> hidden 1, ...):
hidden w1..w4 = 0.15, 0.20, 0.25, 0.30; output w5..w8 = 0.40, 0.45, 0.50, 0.55. fastbp stores
``W`` as (n_in, n_out), so ``W_hidden = [[w1, w3], [w2, w4]]``.

Published figures: total error 0.298371109 before the first update; after it the output weights
are 0.35891648, 0.408666186, 0.511301270, 0.561370121 and the hidden weights 0.149780716,
0.19956143, 0.24975114, 0.29950229. fastbp (float64) reproduces these to every printed digit.

Where fastbp differs: the published error after the first update (0.291027924) and after 10,000
updates (0.0000351085, outputs 0.015912196 and 0.984065734) carry rounded intermediates; exact
float64 maths gives 0.291027774 and 0.0000351019 (outputs 0.015913620, 0.984064274), which the
tests check against an independent computation. A widespread Python transcription of this
example lets its second output neuron read hidden unit 2 twice and mixes up weight indices;
fastbp does the correct maths.
"""
from __future__ import annotations

import numpy as np

import fastbp as fb

from ._common import add_backend, parser

X = np.array([[0.05, 0.10]])
Y = np.array([[0.01, 0.99]])
W_HIDDEN = np.array([[0.15, 0.25], [0.20, 0.30]])  # [[w1, w3], [w2, w4]]
W_OUTPUT = np.array([[0.40, 0.50], [0.45, 0.55]])  # [[w5, w7], [w6, w8]]
B_HIDDEN, B_OUTPUT = 0.35, 0.60
LR = 0.5

PUBLISHED = {
    "error_before": 0.298371109,
    "output_weights": (0.35891648, 0.408666186, 0.511301270, 0.561370121),  # w5..w8
    "hidden_weights": (0.149780716, 0.19956143, 0.24975114, 0.29950229),  # w1..w4
    "error_after_1": 0.291027924,  # hand arithmetic, rounded intermediates
    "error_after_10000": 0.0000351085,
    "outputs_after_10000": (0.015912196, 0.984065734),
}


def source_order(W):
    """A (2, 2) weight matrix in the source's numbering: w1, w2, w3, w4 (or w5..w8)."""
    return np.asarray(W).T.ravel()


def build_network(backend="numpy"):
    """The example's network in float64, biases frozen."""
    hidden = fb.Dense(2, 2, "sigmoid", init=W_HIDDEN, bias_init=B_HIDDEN, frozen=("b",))
    output = fb.Dense(2, 2, "sigmoid", init=W_OUTPUT, bias_init=B_OUTPUT, frozen=("b",))
    return fb.Network([hidden, output], loss="quadratic", backend=backend, dtype="float64")


def train(steps=10000, backend="numpy"):
    """Run the example; returns a dict of the figures (NumPy arrays / floats)."""
    net = build_network(backend)
    result = {"error_before": net.evaluate(X, Y)["loss"]}
    net.fit(X, Y, epochs=1, batch_size=None, lr=LR, shuffle=False)
    params = net.get_params()
    result["hidden_weights"] = source_order(params[0]["W"])
    result["output_weights"] = source_order(params[1]["W"])
    result["error_after_1"] = net.evaluate(X, Y)["loss"]
    if steps > 1:
        net.fit(X, Y, epochs=steps - 1, batch_size=None, lr=LR, shuffle=False)
    result["steps"] = steps
    result["error_after_n"] = net.evaluate(X, Y)["loss"]
    result["outputs_after_n"] = net.predict_proba(X)[0]
    return result


def main(argv=None):
    p = parser("worked_222", __doc__)
    p.add_argument("--steps", type=int, default=10000, help="updates in all (default 10000)")
    add_backend(p, "numpy")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps: expected a positive integer, got {args.steps}")
    r = train(args.steps, args.backend)

    def row(label, published, ours, fmt="{:.9f}"):
        published = " ".join(f"{v:<{len(fmt.format(0.5))}}" for v in map(np.format_float_positional, np.atleast_1d(published)))
        ours = " ".join(fmt.format(v) for v in np.atleast_1d(ours))
        print(f"{label:28s} published {published.rstrip()}\n{'':28s} fastbp    {ours}")

    print("2-2-2 worked example (Mazur), float64, learning rate 0.5")
    row("total error before", PUBLISHED["error_before"], r["error_before"])
    row("output weights w5..w8", PUBLISHED["output_weights"], r["output_weights"])
    row("hidden weights w1..w4", PUBLISHED["hidden_weights"], r["hidden_weights"])
    row("total error after 1", PUBLISHED["error_after_1"], r["error_after_1"])
    if r["steps"] == 10000:
        row("total error after 10000", PUBLISHED["error_after_10000"], r["error_after_n"], "{:.10f}")
        row("outputs after 10000", PUBLISHED["outputs_after_10000"], r["outputs_after_n"])
        print("(the published later figures carry rounded hand arithmetic; fastbp's are exact float64)")
    else:
        print(f"after {r['steps']} updates: total error {r['error_after_n']:.10f}, outputs "
              f"{r['outputs_after_n'][0]:.9f} {r['outputs_after_n'][1]:.9f}")
    return 0
