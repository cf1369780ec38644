"""Under pytest-xdist (``-n auto``: one test process per core) each process's BLAS keeps to one
thread. OpenBLAS's threads busy-wait for a while after each threaded product, so two processes
each with a pool of one thread per core take the cores from each other: scikit-learn's L-BFGS
estimator checks took 15 s instead of 1 s on two cores. Set here, before NumPy is imported (this
file is imported before the test modules), and inherited by the programs the tests start."""
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
