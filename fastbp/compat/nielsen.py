"""Nielsen's ``network.py`` ("Neural Networks and Deep Learning", chapter 1) on fastbp.

Book code runs unchanged after one import::

    import fastbp.compat.nielsen as network
    net = network.Network([784, 30, 10])
    net.SGD(training_data, 30, 10, 3.0, test_data=test_data)

``weights`` ((y, x) arrays) and ``biases`` ((y, 1) arrays) are plain lists of float64 NumPy
arrays, read and assigned as in the book; training runs on fastbp's fast backend (``backend``
"auto", ``dtype`` "float64" by default; see ``configure``). With the same ``random.seed`` and
``np.random.seed``, the weights after training equal those of the book's own code up to float
rounding. Differences: ``SGD`` does not shuffle the caller's list in place (it shuffles an index
order with the same ``random.shuffle`` draws), and a subclass overriding ``update_mini_batch``
is not called by ``SGD``, which trains whole epochs at once.
"""
from __future__ import annotations

import numpy as np

from ._book import BookNetwork, configure, sigmoid, sigmoid_prime, vectorized_result

__all__ = ["Network", "sigmoid", "sigmoid_prime", "vectorized_result", "configure"]


class Network(BookNetwork):
    """A sigmoid network with the quadratic cost, as in the book's ``network.py``."""

    loss = "quadratic"

    def __init__(self, sizes, *, backend=None, dtype=None):
        super().__init__(sizes, backend, dtype)
        self.biases = [np.random.randn(y, 1) for y in self.sizes[1:]]
        self.weights = [np.random.randn(y, x) for x, y in zip(self.sizes[:-1], self.sizes[1:])]

    def SGD(self, training_data, epochs, mini_batch_size, eta, test_data=None):
        """Mini-batch stochastic gradient descent; with ``test_data`` prints the number of test
        inputs classified correctly after each epoch (``Epoch 0: 9129 / 10000``)."""
        test_data = [] if test_data is None else list(test_data)
        if test_data:
            test = self._as_arrays(test_data, "test_data")

        def report(j):
            if test_data:
                print(f"Epoch {j}: {self._correct(*test)} / {len(test[1])}")
            else:
                print(f"Epoch {j} complete")

        train = self._as_arrays(training_data, "training_data")
        self._sgd(train, epochs, mini_batch_size, eta, after_epoch=report)

    def update_mini_batch(self, mini_batch, eta):
        """One gradient-descent step on ``mini_batch`` (a list of (x, y) pairs)."""
        self._update(mini_batch, eta, 0.0)
