"""Activation derivatives and backpropagation's gradients, checked against finite differences.

Source: the textbook chapter on activation functions and their derivatives: sigmoid
s(z) = 1/(1 + e^-z) with s' = s(1 - s); tanh with tanh' = 1 - tanh^2; relu with relu' = 1 for
z > 0, else 0; leaky relu with slope p, derivative 1 for z > 0, else p. Each formula is compared
with the central difference (f(z + h) - f(z - h)) / 2h; then ``fb.gradcheck`` compares
backpropagation's gradients of small float64 networks with central differences of the loss for
every parameter and prints the worst relative error per layer.

Published figures: the derivative formulas above (no numbers); a correct backprop agrees with
finite differences to about 1e-6 relative error or better in float64.

In fastbp: the functions are ``fb.sigmoid``, ``fb.sigmoid_prime``, ``fb.tanh``, ``fb.tanh_prime``,
``fb.relu``, ``fb.relu_prime``, ``fb.leaky_relu(z, slope)``, ``fb.leaky_relu_prime(z, slope)``.
At exactly z = 0, where relu and leaky relu have no derivative, fastbp takes 0 and the slope;
the check skips points that close to the kink.
"""
from __future__ import annotations

import numpy as np

import fastbp as fb

from ._common import add_plots, figure_class, parser, save_png

SLOPE = 0.1  # leaky relu's p in this demo (fastbp's default is 0.01)


def activation_pairs(slope=SLOPE):
    """``{name: (f, f')}`` for the four activations."""
    return {
        "sigmoid": (fb.sigmoid, fb.sigmoid_prime),
        "tanh": (fb.tanh, fb.tanh_prime),
        "relu": (fb.relu, fb.relu_prime),
        f"leaky_relu({slope:g})": (lambda z: fb.leaky_relu(z, slope), lambda z: fb.leaky_relu_prime(z, slope)),
    }


def central_difference(f, z, h=1e-6):
    return (f(z + h) - f(z - h)) / (2 * h)


def check_derivatives(z=None, h=1e-6, slope=SLOPE):
    """Worst absolute difference between f'(z) and the central difference, per activation, over
    float64 points ``z`` (default: 2001 points in [-6, 6], minus those within 10h of the kink at 0)."""
    if z is None:
        z = np.linspace(-6, 6, 2001)
    z = np.asarray(z, dtype=np.float64)
    z = z[np.abs(z) > 10 * h]
    return {name: float(np.max(np.abs(fp(z) - central_difference(f, z, h))))
            for name, (f, fp) in activation_pairs(slope).items()}


def gradcheck_nets(seed=0):
    """``[(description, GradCheckResult)]`` for small float64 networks of each activation/loss."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((8, 3))
    labels = rng.integers(0, 2, 8)
    cases = [("sigmoid", "sigmoid", "quadratic"), ("tanh", "sigmoid", "binary_cross_entropy"),
             (("leaky_relu", SLOPE), "softmax", "cross_entropy"), ("relu", "identity", "mse")]
    results = []
    for hidden, output, loss in cases:
        net = fb.Network([fb.Dense(3, 5, hidden, bias_init=0.1), fb.Dense(5, 4, hidden, bias_init=0.1),
                          fb.Dense(4, 2, output)], loss=loss, backend="numpy", dtype="float64", seed=seed)
        name = hidden if isinstance(hidden, str) else f"{hidden[0]}({hidden[1]:g})"
        results.append((f"3-5-4-2 {name}, {output} output, {loss}", fb.gradcheck(net, X, labels)))
    return results


def plot_activations(folder, Figure, slope=SLOPE):
    fig = Figure(figsize=(10, 5), layout="constrained")
    axes = fig.subplots(2, 4, sharex=True)
    z = np.linspace(-4, 4, 801)
    for col, (name, (f, fp)) in enumerate(activation_pairs(slope).items()):
        axes[0, col].plot(z, f(z), color="tab:blue")
        axes[0, col].set_title(name)
        axes[1, col].plot(z, fp(z), color="tab:orange", label="formula")
        zs = np.linspace(-3.9, 3.9, 26)  # avoids z = 0, where relu has no derivative
        axes[1, col].plot(zs, central_difference(f, zs), "k.", ms=4, label="finite difference")
        axes[1, col].set_xlabel("z")
    axes[0, 0].set_ylabel("f(z)")
    axes[1, 0].set_ylabel("f'(z)")
    axes[1, 0].legend(fontsize=7)
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    return save_png(fig, folder, "activations.png")


def main(argv=None):
    p = parser("derivatives", __doc__)
    add_plots(p)
    args = p.parse_args(argv)
    print("activation derivatives vs central differences (h = 1e-6, z in [-6, 6], float64):")
    for name, err in check_derivatives().items():
        print(f"  {name:16s} worst |f' - difference| = {err:.2e}")
    for description, result in gradcheck_nets():
        print(f"\nfb.gradcheck on {description}: worst relative error {result.worst:.2e}")
        print("\n".join("  " + line for line in str(result).splitlines()))
    Figure = figure_class(args.no_plots)
    if Figure is not None:
        print(f"wrote {plot_activations(args.out, Figure)}")
    return 0
