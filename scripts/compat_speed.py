"""One epoch of the book's run ([784, 30, 10], mini-batches of 10, eta = 3.0) through
``fastbp.compat.nielsen`` against the book's own algorithm (per-example backprop in plain NumPy),
side by side in one run; prints the medians and their ratio.

    python scripts/compat_speed.py [DATA] [--repeats 3] [--backend auto] [--dtype float64]

DATA: the book's mnist.pkl.gz or a folder of IDX files (default: see fastbp.compat.mnist_loader;
without MNIST, Fashion-MNIST's 60k training images stand in). The compat time includes SGD's
conversion of the list of (x, y) pairs to arrays (once per SGD call, as the book calls SGD once
for all epochs: the per-epoch time within a 5-epoch call is printed too); the compile time of
the backend is excluded by an untimed first call.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import numpy as np

import fastbp.compat.mnist_loader as mnist_loader
import fastbp.compat.nielsen as network


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class BookNetwork:
    """The book's network.py, as written there (Python 3): per-example backprop."""

    def __init__(self, weights, biases):
        self.weights = [w.copy() for w in weights]
        self.biases = [b.copy() for b in biases]

    def SGD(self, training_data, epochs, mini_batch_size, eta):
        training_data = list(training_data)
        n = len(training_data)
        for _ in range(epochs):
            random.shuffle(training_data)
            for k in range(0, n, mini_batch_size):
                self.update_mini_batch(training_data[k:k + mini_batch_size], eta)

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = (activations[-1] - y) * sigmoid(zs[-1]) * (1 - sigmoid(zs[-1]))
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for layer in range(2, len(self.weights) + 1):
            sp = sigmoid(zs[-layer]) * (1 - sigmoid(zs[-layer]))
            delta = np.dot(self.weights[-layer + 1].transpose(), delta) * sp
            nabla_b[-layer] = delta
            nabla_w[-layer] = np.dot(delta, activations[-layer - 1].transpose())
        return nabla_b, nabla_w


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="mnist.pkl.gz or a folder of IDX files")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--train-all", action="store_true",
                        help="train on training + validation data (60k with IDX data) instead of 50k")
    args = parser.parse_args(argv)

    training_data, validation_data, _ = mnist_loader.load_data_wrapper(args.data)
    training_data = list(training_data)
    if args.train_all:
        training_data += [(x, mnist_loader.vectorized_result(y)) for x, y in validation_data]
    n = len(training_data)
    np.random.seed(0)
    net = network.Network([784, 30, 10], backend=args.backend, dtype=args.dtype)
    book = BookNetwork(net.weights, net.biases)
    net.SGD(training_data[:100], 1, 10, 3.0)  # untimed: compiles/loads the backend's kernels
    print(f"fastbp backend: {net._net.backend.name}, dtype {net.dtype}; {n} training samples; "
          f"{args.repeats} repeats, alternating", file=sys.stderr)

    times = {"compat": [], "book": []}
    for r in range(args.repeats):
        for name, model in (("compat", net), ("book", book)):
            random.seed(r)
            t0 = time.perf_counter()
            model.SGD(training_data, 1, 10, 3.0)
            times[name].append(time.perf_counter() - t0)
        print(f"repeat {r}: compat {times['compat'][-1]:.3f} s, book {times['book'][-1]:.3f} s",
              file=sys.stderr)
    epochs = 5  # the book's SGD converts the data once per call: the per-epoch cost of a longer call
    per_epoch = []
    for r in range(args.repeats):
        random.seed(r)
        t0 = time.perf_counter()
        net.SGD(training_data, epochs, 10, 3.0)
        per_epoch.append((time.perf_counter() - t0) / epochs)
    compat, book_time = statistics.median(times["compat"]), statistics.median(times["book"])
    steady = statistics.median(per_epoch)
    print(f"one epoch of {n} samples, [784, 30, 10], mini-batch 10, eta 3.0 (medians of {args.repeats}):")
    print(f"  book's per-example loop (NumPy):  {book_time:.3f} s")
    print(f"  fastbp.compat.nielsen SGD:        {compat:.3f} s  ({net._net.backend.name}, {net.dtype})")
    print(f"  speed-up: {book_time / compat:.1f}x")
    print(f"  per epoch within SGD(..., {epochs}, 10, 3.0): {steady:.3f} s  (speed-up {book_time / steady:.1f}x)")


if __name__ == "__main__":
    main()
