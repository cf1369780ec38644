"""pytest-benchmark timings of the numba backend (not in the default test run):

    pytest benchmarks/ --benchmark-columns=median,min,max,rounds

One fused training epoch (784-30-10 sigmoid, quadratic loss, lr 3.0) at batch 10 and batch 1000,
one and two threads, and inference over the test images. Uses Fashion-MNIST when it is installed
(``apt-get install dataset-fashion-mnist``), otherwise random uint8 images of the same shape."""
import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("pytest_benchmark")

import fastbp as fb  # noqa: E402
from fastbp.optim import SGD  # noqa: E402


@pytest.fixture(scope="module")
def data():
    if fb.datasets.find_dataset("fashion-mnist") is not None:
        d = fb.datasets.load_fashion_mnist(download=False)
        return d.X_train, d.y_train, d.X_test
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (60000, 784), dtype=np.uint8), rng.integers(0, 10, 60000),
            rng.integers(0, 256, (10000, 784), dtype=np.uint8))


def epoch_runner(data, dtype, threads, batch_size):
    X, y, _ = data
    backend = fb.get_backend("numba", dtype, threads=threads)
    net = fb.Network.from_sizes([784, 30, 10], backend=backend, seed=0)
    Y = backend.asarray(np.eye(10)[y])
    opt = SGD(3.0)
    backend.warmup(net.layers, "quadratic", X, Y, batch_size, opt)
    rng = np.random.default_rng(0)

    def epoch():
        return backend.train_epoch(net.layers, "quadratic", X, 1 / 255, Y, rng.permutation(len(X)), batch_size, opt)

    return epoch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch_size", [10, 1000])
def test_epoch(benchmark, data, dtype, threads, batch_size):
    benchmark.group = f"epoch batch {batch_size}"
    total = benchmark.pedantic(epoch_runner(data, dtype, threads, batch_size), rounds=5, warmup_rounds=1)
    assert np.isfinite(total)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inference(benchmark, data, dtype):
    benchmark.group = "predict 10k"
    net = fb.Network.from_sizes([784, 30, 10], backend="numba", dtype=dtype, seed=0)
    X_test = data[2]
    net.predict(X_test[:10])
    labels = benchmark(net.predict, X_test)
    assert labels.shape == (len(X_test),)
