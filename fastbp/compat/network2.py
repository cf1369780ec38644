"""Nielsen's ``network2.py`` (chapter 3: cross-entropy, L2 regularisation, better initial
weights, monitoring, save/load) on fastbp. Book code runs unchanged after one import::

    import fastbp.compat.network2 as network2
    net = network2.Network([784, 30, 10], cost=network2.CrossEntropyCost)
    net.SGD(training_data, 30, 10, 0.5, lmbda=5.0, evaluation_data=validation_data,
            monitor_evaluation_accuracy=True)

Training runs on fastbp's fast backend: ``CrossEntropyCost`` is fastbp's "binary_cross_entropy"
loss (output delta a - y), ``QuadraticCost`` its "quadratic" loss, and ``lmbda`` the book's
L2 step ``w -> (1 - eta*lmbda/n) w`` (fastbp's ``weight_decay = lmbda / n``, weights only).
``save``/``load`` read and write the book's JSON format. See ``fastbp.compat.nielsen`` for
what is shared (the ``weights``/``biases`` lists, seeds, ``configure``).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from .._io import atomic_write
from ._book import BookNetwork, configure, sigmoid, sigmoid_prime, vectorized_result

__all__ = ["Network", "QuadraticCost", "CrossEntropyCost", "load", "sigmoid", "sigmoid_prime",
           "vectorized_result", "configure"]


class QuadraticCost:
    loss = "quadratic"

    @staticmethod
    def fn(a, y):
        """0.5 * ||a - y||^2 (for one column, or summed over several)."""
        return 0.5 * np.linalg.norm(a - y) ** 2

    @staticmethod
    def delta(z, a, y):
        return (a - y) * sigmoid_prime(z)


class CrossEntropyCost:
    loss = "binary_cross_entropy"

    @staticmethod
    def fn(a, y):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a)))

    @staticmethod
    def delta(z, a, y):
        return a - y


COSTS = {"QuadraticCost": QuadraticCost, "CrossEntropyCost": CrossEntropyCost}


class Network(BookNetwork):
    """A sigmoid network with a choice of cost, as in the book's ``network2.py``."""

    def __init__(self, sizes, cost=CrossEntropyCost, *, backend=None, dtype=None):
        if getattr(cost, "loss", None) not in ("quadratic", "binary_cross_entropy"):
            raise TypeError(f"cost: expected network2.QuadraticCost or network2.CrossEntropyCost "
                            f"(or a subclass), got {cost!r}")
        super().__init__(sizes, backend, dtype)
        self.cost = cost
        self.default_weight_initializer()

    @property
    def loss(self):  # the fastbp loss of the current cost
        return self.cost.loss

    def default_weight_initializer(self):
        """Weights N(0, 1/n_in), biases N(0, 1)."""
        self.biases = [np.random.randn(y, 1) for y in self.sizes[1:]]
        self.weights = [np.random.randn(y, x) / np.sqrt(x) for x, y in zip(self.sizes[:-1], self.sizes[1:])]
        self._net = None  # the cost may have changed: the fastbp network is rebuilt on next use

    def large_weight_initializer(self):
        """Weights and biases N(0, 1), as in chapter 1."""
        self.biases = [np.random.randn(y, 1) for y in self.sizes[1:]]
        self.weights = [np.random.randn(y, x) for x, y in zip(self.sizes[:-1], self.sizes[1:])]
        self._net = None

    def _push(self):
        if self._net is not None and self._net.loss != self.cost.loss:
            self._net = None  # the user switched cost
        return super()._push()

    def SGD(self, training_data, epochs, mini_batch_size, eta, lmbda=0.0, evaluation_data=None,
            monitor_evaluation_cost=False, monitor_evaluation_accuracy=False,
            monitor_training_cost=False, monitor_training_accuracy=False, early_stopping_n=0):
        """Mini-batch SGD with L2 regularisation ``lmbda``. Returns the four per-epoch lists
        ``(evaluation_cost, evaluation_accuracy, training_cost, training_accuracy)`` (those not
        monitored stay empty). ``early_stopping_n > 0`` stops after that many epochs without a
        better evaluation accuracy."""
        training_data = list(training_data)
        train = self._as_arrays(training_data, "training_data")
        n = len(train[1])
        evaluation = None
        if evaluation_data is not None:
            evaluation_data = list(evaluation_data)
            if evaluation_data:
                evaluation = self._as_arrays(evaluation_data, "evaluation_data")
        needs_evaluation = monitor_evaluation_cost or monitor_evaluation_accuracy or early_stopping_n
        if needs_evaluation and evaluation is None:
            raise ValueError("evaluation_data: expected (x, y) pairs to monitor or early-stop on, got none")
        evaluation_cost, evaluation_accuracy = [], []
        training_cost, training_accuracy = [], []
        best = {"accuracy": 0, "epochs_without": 0}

        def monitor(j):
            print(f"Epoch {j} training complete")
            if monitor_training_cost:
                training_cost.append(self._total_cost(*train, lmbda))
                print(f"Cost on training data: {training_cost[-1]}")
            if monitor_training_accuracy:
                training_accuracy.append(self._correct(*train))
                print(f"Accuracy on training data: {training_accuracy[-1]} / {n}")
            if monitor_evaluation_cost:
                evaluation_cost.append(self._total_cost(*evaluation, lmbda))
                print(f"Cost on evaluation data: {evaluation_cost[-1]}")
            accuracy = None
            if monitor_evaluation_accuracy or early_stopping_n:
                accuracy = self._correct(*evaluation)
            if monitor_evaluation_accuracy:
                evaluation_accuracy.append(accuracy)
                print(f"Accuracy on evaluation data: {accuracy} / {len(evaluation[1])}")
            print()
            if early_stopping_n > 0:
                if accuracy > best["accuracy"]:
                    best["accuracy"], best["epochs_without"] = accuracy, 0
                else:
                    best["epochs_without"] += 1
                return best["epochs_without"] == early_stopping_n
            return False

        self._sgd(train, epochs, mini_batch_size, eta, weight_decay=lmbda / n, after_epoch=monitor)
        return evaluation_cost, evaluation_accuracy, training_cost, training_accuracy

    def update_mini_batch(self, mini_batch, eta, lmbda, n):
        """One step on ``mini_batch`` with L2 regularisation ``lmbda`` for a training set of size n."""
        self._update(mini_batch, eta, lmbda / n)

    def accuracy(self, data, convert=False):
        """The number of inputs classified correctly. ``convert`` is accepted for the book's calls;
        the format of the targets (one-hot columns or int labels) is recognised either way."""
        return self._correct(*self._as_arrays(data, "data"))

    def total_cost(self, data, lmbda, convert=False):
        """The mean cost over ``data`` plus the L2 term 0.5 * (lmbda / len(data)) * sum ||w||^2."""
        return self._total_cost(*self._as_arrays(data, "data"), lmbda)

    def _total_cost(self, X, labels, lmbda):
        from ._book import one_hot

        A = self._outputs(X).astype(np.float64)
        cost = self.cost.fn(A, one_hot(labels, self.sizes[-1])) / len(labels)
        return float(cost + 0.5 * (lmbda / len(labels)) * sum(np.linalg.norm(w) ** 2 for w in self.weights))

    def save(self, filename):
        """Save to ``filename`` in the book's JSON format (written to a temporary name, then renamed)."""
        self._checked_params()
        data = {"sizes": self.sizes,
                "weights": [np.asarray(w, dtype=np.float64).tolist() for w in self.weights],
                "biases": [np.asarray(b, dtype=np.float64).reshape(-1, 1).tolist() for b in self.biases],
                "cost": str(self.cost.__name__)}
        filename = os.fspath(filename)
        with atomic_write(filename, "w") as f:
            json.dump(data, f)


def load(filename):
    """A Network from a file written by ``save`` (or by the book's ``network2.py``).

    A file that is not such a network raises ValueError naming the file and what is wrong: not
    JSON, missing keys, bad ``sizes``, an unknown cost, or weights and biases that are not lists
    of numeric arrays of the shapes ``sizes`` asks for (a non-number is named by its index, e.g.
    ``weights[0][4][6]``), or that hold NaN or infinite values."""
    filename = os.fspath(filename)
    try:
        with open(filename, encoding="utf-8") as f:
            data = json.load(f)
        sizes, weights, biases, cost = data["sizes"], data["weights"], data["biases"], data["cost"]
    except (ValueError, KeyError, TypeError) as e:  # ValueError: JSON and UTF-8 decoding errors
        why = f"no key {e}" if isinstance(e, KeyError) else str(e) or type(e).__name__
        raise ValueError(f"{filename}: not a network2 JSON file (expected an object with the keys "
                         f"sizes, weights, biases, cost): {why}") from None
    if not isinstance(cost, str) or cost not in COSTS:
        raise ValueError(f"{filename}: unknown cost {cost!r:.40}, expected one of {', '.join(COSTS)}")
    try:
        net = Network(sizes, cost=getattr(sys.modules[__name__], cost))
        net.weights, net.biases = weights, biases
        params = net._checked_params(finite=True)  # the checks name the bad entry
    except (ValueError, TypeError) as e:
        raise ValueError(f"{filename}: {e}") from None
    net.weights = [p["W"].T.copy() for p in params]
    net.biases = [p["b"].reshape(-1, 1).copy() for p in params]
    return net
