"""Nielsen's MNIST network: 784-30-10 sigmoid, quadratic cost, batch 10, eta 3.0, 30 epochs.

Source: Michael Nielsen, "Neural Networks and Deep Learning", chapter 1 (``network.py``):
``net = network.Network([784, 30, 10]); net.SGD(training_data, 30, 10, 3.0, test_data=test_data)``
with weights and biases drawn from N(0, 1), the quadratic cost, the first 50,000 MNIST training
images (the other 10,000 are the book's validation set) and accuracy on the 10,000 test images.

Published figures: the book reports a best test accuracy of 95.42% (its run peaks near 95%; runs
differ with the random start).

The data are whatever MNIST-format set is available, chosen as ``fastbp train`` does: MNIST
(found on disk or downloaded), else Fashion-MNIST if installed, else scikit-learn's 8x8 digits
(64 inputs, so the network is 64-30-10 there); the script says which in one line. ``--dataset``
names one (or a folder of four IDX files).

In fastbp: ``Network.from_sizes([784, 30, 10], init="normal", loss="quadratic")`` and
``fit(batch_size=10, lr=3.0)``, whose update ``w -= lr/m * sum(grad)`` is the book's. The epoch
order comes from the network's seed instead of Python's ``random.shuffle``; arithmetic is float32
by default (``--dtype float64`` for the book's precision). Per-epoch seconds exclude evaluation.
"""
from __future__ import annotations

import numpy as np

import fastbp as fb

from ._common import add_backend, parser

BOOK_TRAIN = 50000  # the book trains on MNIST's first 50,000 images


def load_data(dataset=None, data_dir=None, download=True, out=print):
    """A ``fastbp.datasets.Split``: the one named, else MNIST, Fashion-MNIST or digits, whichever is
    available first (``out`` gets one line saying which was chosen and why)."""
    from fastbp import datasets

    if dataset is not None:
        data = datasets.load_dataset(dataset, data_dir=data_dir, download=download)
        out(f"data: {data.name} (as asked)")
        return data
    try:
        data = datasets.load_mnist(data_dir=data_dir, download=download)
        out("data: MNIST")
        return data
    except datasets.DataError as e:
        reason = str(e).splitlines()[0]
    try:
        data = datasets.load_fashion_mnist(data_dir=data_dir, download=False)
        out(f"data: Fashion-MNIST, because MNIST is not available ({reason})")
    except datasets.DataError:
        data = datasets.load_digits()
        out(f"data: scikit-learn's 8x8 digits, because neither MNIST ({reason}) nor Fashion-MNIST is available")
    return data


def train(data, epochs=30, batch_size=10, lr=3.0, n_train=BOOK_TRAIN, backend="auto", dtype="float32",
          seed=0, out=print):
    """Nielsen's run on ``data`` (X, y, X_test, y_test); ``out`` gets one line per epoch.
    Returns ``(net, history)``."""
    X, y, Xt, yt = data[:4]
    X, y = X[:n_train], y[:n_train]
    n_classes = int(max(y.max(), yt.max())) + 1
    net = fb.Network.from_sizes([X.shape[1], 30, n_classes], activation="sigmoid", loss="quadratic",
                                init="normal", backend=backend, dtype=dtype, seed=seed)
    if out is not None:
        out(f"{'-'.join(map(str, net.sizes))} sigmoid, quadratic cost, batch {batch_size}, eta {lr}, "
            f"{epochs} epochs, {len(X)} training and {len(Xt)} test images, backend {net.backend.name} "
            f"({net.dtype.name})")

    def report(epoch, history):
        if out is not None:
            correct = round(history.val_accuracy[-1] * len(Xt))
            out(f"Epoch {epoch}: {correct} / {len(Xt)} ({history.val_accuracy[-1]:.2%}), "
                f"{history.seconds[-1]:.3f} s")

    history = net.fit(X, y, epochs=epochs, batch_size=batch_size, lr=lr, validation_data=(Xt, yt),
                      callback=report)
    return net, history


def main(argv=None):
    p = parser("nielsen_mnist", __doc__)
    p.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    p.add_argument("--batch-size", type=int, default=10, help="mini-batch size (default 10)")
    p.add_argument("--lr", type=float, default=3.0, help="learning rate eta (default 3.0)")
    p.add_argument("--n-train", type=int, default=BOOK_TRAIN,
                   help=f"training images used, the first N (default {BOOK_TRAIN}, as the book)")
    p.add_argument("--dataset", default=None, help="mnist, fashion-mnist, digits or a folder of IDX files")
    p.add_argument("--data-dir", default=None, help="folder to look for the data's files first")
    p.add_argument("--no-download", action="store_true", help="never try to download data")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and epoch order (default 0)")
    add_backend(p, "auto")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "n_train"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    data = load_data(args.dataset, args.data_dir, download=not args.no_download)
    net, history = train(data, args.epochs, args.batch_size, args.lr, args.n_train, args.backend, args.dtype,
                         args.seed)
    best = int(np.argmax(history.val_accuracy))
    print(f"best test accuracy {history.val_accuracy[best]:.2%} (epoch {best}), last {history.val_accuracy[-1]:.2%}; "
          f"median {np.median(history.seconds):.3f} s/epoch, compile {history.compile_seconds:.2f} s "
          f"(the book reports 95.42% on MNIST)")
    return 0
