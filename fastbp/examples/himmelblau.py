"""Himmelblau's function minimised by plain gradient descent through fastbp's optimiser.

Source: the textbook exercise on gradient descent with Himmelblau's function
f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2, learning rate 0.01, 200 steps from each of the
starts (4, 0), (1, 0), (-4, 0), (-2, 2).

Published figures: the four runs reach the four minima (3, 2), (-2.805, 3.131),
(-3.779, -3.283) and (3.584, -1.848) (f = 0 at each); a contour plot shows the four paths.

In fastbp: the gradient is written by hand (``himmelblau_grad``), and ``fb.SGD(lr=0.01).step``
applies ``p -= lr * g`` in place, the same optimiser that trains the networks. (4, 0) ends at
(3.584, -1.848), (1, 0) at (3, 2), (-4, 0) at (-3.779, -3.283) and (-2, 2) at (-2.805, 3.131).
"""
from __future__ import annotations

import numpy as np

import fastbp as fb

from ._common import add_plots, figure_class, parser, save_png

STARTS = ((4.0, 0.0), (1.0, 0.0), (-4.0, 0.0), (-2.0, 2.0))
MINIMA = ((3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126))


def himmelblau(x, y):
    return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


def himmelblau_grad(p):
    """The gradient (df/dx, df/dy) at the point ``p = (x, y)``."""
    x, y = p
    a, b = x * x + y - 11, x + y * y - 7
    return np.array([4 * x * a + 2 * b, 2 * a + 4 * y * b])


def descend(start, lr=0.01, steps=200):
    """Gradient descent from ``start``; returns the path, an array (steps + 1, 2)."""
    p = np.array(start, dtype=np.float64)
    opt = fb.SGD(lr=lr)
    path = [p.copy()]
    for _ in range(steps):
        opt.step([p], [himmelblau_grad(p)])
        path.append(p.copy())
    return np.array(path)


def plot_paths(paths, folder, Figure):
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    xs = np.linspace(-6, 6, 400)
    gx, gy = np.meshgrid(xs, xs)
    levels = np.logspace(-0.5, 3.3, 25)
    cs = ax.contour(gx, gy, himmelblau(gx, gy), levels=levels, cmap="viridis", linewidths=0.7)
    fig.colorbar(cs, ax=ax, label="f(x, y)", format="%.3g")
    for start, path in zip(STARTS, paths):
        ax.plot(path[:, 0], path[:, 1], ".-", ms=3, lw=1.2, label=f"from {start}")
        ax.plot(*path[0], "ko", ms=5)
    ax.plot(*np.array(MINIMA).T, "r*", ms=12, label="minima")
    ax.set(xlabel="x", ylabel="y", title="Himmelblau's function: gradient descent, lr 0.01, 200 steps",
           xlim=(-6, 6), ylim=(-6, 6), aspect="equal")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, loc="lower right")
    return save_png(fig, folder, "himmelblau.png")


def main(argv=None):
    p = parser("himmelblau", __doc__)
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--steps", type=int, default=200, help="steps from each start (default 200)")
    add_plots(p)
    args = p.parse_args(argv)
    paths = [descend(s, args.lr, args.steps) for s in STARTS]
    print(f"Himmelblau's function, gradient descent with fastbp.SGD, lr {args.lr}, {args.steps} steps")
    for start, path in zip(STARTS, paths):
        x, y = path[-1]
        print(f"  from ({start[0]:g}, {start[1]:g}) to ({x:.3f}, {y:.3f}), f = {himmelblau(x, y):.2e}")
    Figure = figure_class(args.no_plots)
    if Figure is not None:
        print(f"wrote {plot_paths(paths, args.out, Figure)}")
    return 0
