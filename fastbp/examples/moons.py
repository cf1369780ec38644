"""A deep sigmoid network on two moons, trained one sample at a time, with three plots.

Source: the back-propagation exercise of Long Liangqu's "TensorFlow 深度学习" (Deep Learning with
TensorFlow 2), section 7.9, written there in plain NumPy. Data: ``make_moons(2000, noise=0.2,
random_state=100)``, split 70/30 with ``random_state=42`` (1,400 training and 600 test points).
Network 2-25-50-25-2, sigmoid everywhere; weights N(0, 1) * sqrt(1 / n_out), biases uniform in
[0, 0.1); MSE against one-hot targets; per-sample SGD (samples in order), learning rate 0.01,
1,000 epochs; the training MSE and the test accuracy are printed every 10 epochs.

Published figures: three plots, the data set, the MSE and accuracy curves, and the decision
boundary. The NumPy original takes minutes (1.4 million single-sample updates); fastbp on its
numba backend takes seconds (numpy backend: minutes too). The default backend is numba when
available, else numpy: one tiny update per sample is CPU work (``--backend`` picks another).

Where fastbp differs: the source never updates the biases (its update loop changes only
``layer.weights``), an omission rather than a design; fastbp trains the biases too, as
backpropagation does. ``--freeze-biases`` reproduces the source's behaviour. Its output delta
``(y - o) * o(1 - o)`` is the gradient of 0.5 * sum_k (o_k - y_k)^2, which equals that of
fastbp's ``"mse"`` (the mean over the two outputs, 2(o - y)/2); the printed MSE is the source's
``np.mean(np.square(y_onehot - out))`` over the training set. The random numbers come from
``default_rng(seed)`` instead of the source's unseeded ``np.random``.
"""
from __future__ import annotations

import time

import numpy as np

import fastbp as fb

from ._common import add_backend, add_plots, figure_class, parser, save_png

SIZES = (2, 25, 50, 25, 2)


def load(n_samples=2000, noise=0.2, random_state=100):
    """The source's data: ``(X_train, y_train, X_test, y_test)``, a 70/30 split."""
    return fb.datasets.make_moons(n_samples, noise=noise, random_state=random_state)[:4]


def build_network(seed=0, backend="auto", dtype="float64", freeze_biases=False):
    """2-25-50-25-2 sigmoid, with the source's initialisation."""
    rng = np.random.default_rng(seed)
    frozen = ("b",) if freeze_biases else ()
    layers = [fb.Dense(n_in, n_out, "sigmoid", init=rng.standard_normal((n_in, n_out)) * np.sqrt(1 / n_out),
                       bias_init=rng.uniform(size=n_out) * 0.1, frozen=frozen)
              for n_in, n_out in zip(SIZES, SIZES[1:])]
    return fb.Network(layers, loss="mse", backend=backend, dtype=dtype, seed=seed)


def train(net, data, epochs=1000, lr=0.01, every=10, out=print):
    """Per-sample SGD in the source's order; records, after epoch 1 and every ``every`` epochs,
    the training MSE and the test accuracy. Returns a dict of lists and the training seconds."""
    X, y, Xt, yt = data
    record = {"epoch": [], "mse": [], "accuracy": []}

    def callback(epoch, history):
        done = epoch + 1
        if done == 1 or done % every == 0 or done == epochs:
            record["epoch"].append(done)
            record["mse"].append(net.evaluate(X, y)["loss"])
            record["accuracy"].append(net.evaluate(Xt, yt)["accuracy"])
            if out is not None:
                out(f"  epoch {done:5d}  MSE {record['mse'][-1]:.6f}  test accuracy {record['accuracy'][-1]:.2%}")

    t0 = time.perf_counter()
    history = net.fit(X, y, epochs=epochs, batch_size=1, lr=lr, shuffle=False, callback=callback)
    record["wall_seconds"] = time.perf_counter() - t0
    record["train_seconds"] = float(np.sum(history.seconds))
    record["compile_seconds"] = history.compile_seconds
    return record


def plot_data(data, folder, Figure):
    X, y, Xt, yt = data
    fig = Figure(figsize=(6.5, 5), layout="constrained")
    ax = fig.add_subplot()
    for label, color in ((0, "tab:red"), (1, "tab:blue")):
        ax.scatter(*X[y == label].T, s=10, c=color, alpha=0.7, label=f"class {label}, training")
        ax.scatter(*Xt[yt == label].T, s=14, facecolors="none", edgecolors=color, label=f"class {label}, test")
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title=f"Two moons: {len(X)} training and {len(Xt)} test points")
    ax.legend(fontsize=8)
    return save_png(fig, folder, "moons_data.png")


def plot_curves(record, folder, Figure):
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(record["epoch"], record["mse"], color="tab:purple")
    ax1.set(xlabel="epoch", ylabel="training MSE", title="MSE (one-hot targets)")
    ax2.plot(record["epoch"], np.array(record["accuracy"]) * 100, color="tab:green")
    ax2.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return save_png(fig, folder, "moons_training.png")


def plot_boundary(net, data, folder, Figure):
    X, y, Xt, yt = data
    lo, hi = np.vstack([X, Xt]).min(axis=0) - 0.5, np.vstack([X, Xt]).max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
    a = net.predict_proba(np.column_stack([gx.ravel(), gy.ravel()]))
    margin = (a[:, 1] - a[:, 0]).reshape(gx.shape)  # > 0: class 1 (the argmax rule)
    fig = Figure(figsize=(6.5, 5), layout="constrained")
    ax = fig.add_subplot()
    cs = ax.contourf(gx, gy, margin, levels=np.linspace(-1, 1, 21), cmap="RdBu", alpha=0.8)
    fig.colorbar(cs, ax=ax, label="output 1 - output 0")
    ax.contour(gx, gy, margin, levels=[0.0], colors="k", linewidths=1.5)
    for label, color in ((0, "tab:red"), (1, "tab:blue")):
        ax.scatter(*Xt[yt == label].T, s=12, c=color, edgecolors="k", linewidths=0.3, label=f"test, class {label}")
    acc = net.evaluate(Xt, yt)["accuracy"]
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title=f"Decision boundary (black), test accuracy {acc:.2%}")
    ax.legend(fontsize=8, loc="lower right")
    return save_png(fig, folder, "moons_boundary.png")


def main(argv=None):
    p = parser("moons", __doc__)
    p.add_argument("--epochs", type=int, default=1000, help="epochs (default 1000)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--n-samples", type=int, default=2000, help="points in all, 70%% for training (default 2000)")
    p.add_argument("--every", type=int, default=10, help="record MSE and accuracy every N epochs (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    p.add_argument("--freeze-biases", action="store_true", help="never update the biases, as the source's code")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    add_backend(p, "cpu")
    add_plots(p)
    args = p.parse_args(argv)
    if args.backend == "cpu":  # one tiny update per sample is CPU work: a GPU would launch kernels per sample
        args.backend = "numba" if fb.kernels.available("numba") else "numpy"
    for name in ("epochs", "n_samples", "every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    data = load(args.n_samples)
    net = build_network(args.seed, args.backend, args.dtype, args.freeze_biases)
    print(f"two moons ({len(data[0])} train, {len(data[2])} test), 2-25-50-25-2 sigmoid, MSE, per-sample SGD, "
          f"lr {args.lr}, {args.epochs} epochs, backend {net.backend.name} ({net.dtype.name})"
          f"{', biases frozen' if args.freeze_biases else ''}")
    record = train(net, data, args.epochs, args.lr, args.every, out=None if args.quiet else print)
    print(f"final: MSE {record['mse'][-1]:.6f}, test accuracy {record['accuracy'][-1]:.2%}; training "
          f"{record['train_seconds']:.2f} s ({record['compile_seconds']:.2f} s compiling before it, "
          f"{record['wall_seconds']:.2f} s wall with the evaluations), backend {net.backend.name}")
    Figure = figure_class(args.no_plots)
    if Figure is not None:
        for path in (plot_data(data, args.out, Figure), plot_curves(record, args.out, Figure),
                     plot_boundary(net, data, args.out, Figure)):
            print(f"wrote {path}")
    return 0
