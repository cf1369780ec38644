"""Under pytest-xdist (``-n auto``: one test process per core) each process's BLAS keeps to one
thread. OpenBLAS's threads busy-wait for a while after each threaded product, so two processes
each with a pool of one thread per core take the cores from each other: scikit-learn's L-BFGS
estimator checks took 15 s instead of 1 s on two cores. Set here, before NumPy is imported (this
file is imported before the test modules), and inherited by the programs the tests start.

For the same reason the numba backend's first compiles start no helper process here
(``FASTBP_COMPILE_AHEAD=0``, see ``kernels/compile_ahead.py``): with one test process per core
busy, a helper only adds a process to the cores (a Ctrl-C latency test of another test process
measured 2.2 s against its 2 s bound while compiles with helpers ran beside it). The helper has
tests of its own (tests/test_compile_ahead.py), whose programs turn it back on."""
import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("FASTBP_COMPILE_AHEAD", "0")
