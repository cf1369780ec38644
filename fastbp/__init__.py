"""fastbp: a small, fast, readable backpropagation engine for multilayer perceptrons.

>>> import fastbp as fb
>>> net = fb.Network.from_sizes([784, 30, 10], activation="sigmoid", loss="quadratic")
>>> history = net.fit(X, y, epochs=30, batch_size=10, lr=3.0, validation_data=(Xt, yt))
"""
from . import activations, kernels
from .activations import (identity, identity_prime, leaky_relu, leaky_relu_prime, relu, relu_prime,
                          sigmoid, sigmoid_prime, softmax, tanh, tanh_prime)
from .gradcheck import GradCheckResult, gradcheck
from .kernels import BACKENDS, BackendUnavailable, get_backend
from .layers import Dense
from .network import DivergenceError, History, Network
from .ensemble import Ensemble  # noqa: E402  (after Network, which it builds on)
from .optim import SGD, Adam, Optimizer
from . import schedules
from .schedules import Adaptive, Constant, InverseScaling

__version__ = "0.2.0"


def __getattr__(name):  # fastbp.datasets is imported on first use, keeping `import fastbp` fast
    if name == "datasets":
        import importlib

        return importlib.import_module(".datasets", __name__)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")

__all__ = ["Network", "Ensemble", "Dense", "SGD", "Adam", "Optimizer", "History", "DivergenceError", "gradcheck",
           "GradCheckResult", "schedules", "Constant", "InverseScaling", "Adaptive", "get_backend", "BACKENDS", "BackendUnavailable", "activations", "datasets", "kernels",
           "sigmoid", "sigmoid_prime", "tanh", "tanh_prime", "relu", "relu_prime", "leaky_relu",
           "leaky_relu_prime", "identity", "identity_prime", "softmax"]
