"""Cold start of the numba backend: the seconds each configuration a user meets spends compiling
when first used (an empty kernel cache at the start, then each step in a new process on the same
cache, so a step pays only for what is new to it), and the seconds a new process then spends
loading a configuration's kernels from the cache (the default, float64, two threads, sparse).

    python scripts/bench_compile.py                         # this checkout, about two minutes
    python scripts/bench_compile.py --repo /tmp/base --repo .   # before/after, step by step in turn
    python scripts/bench_compile.py --breakdown                # where the default fit's seconds go

Each step runs one short ``fit`` (``history["compile_seconds"]``: the warmup that compiles or
loads the kernels the fit needs) or the first ``predict``, and reports it with the process's
wall time. Prints a Markdown table with the machine and date. With several ``--repo``, each
checkout has its own cache and the checkouts take turns at each step, so that a shared machine's
changing speed affects them alike (it varies by a fifth from one minute to the next). Each
checkout runs with its own kernels (its ``fastbp/`` copied, its ``kernels/`` linked in, as
``bench_interleaved.py`` does; before 2026-12-01 22:30 UTC a plain path entry made every checkout
run the installed kernels), and each child checks that it did.
``--breakdown``: instead, the default fit compiled in this process from an empty cache, with the
seconds each compiled kernel took itself (Numba's compile events, minus those of the kernels it
compiled on the way), most first; all of it in the one process (no helper process compiling half
of it, ``FASTBP_COMPILE_AHEAD=0``). The table's steps run as a user's would, with the helper where
the machine has two CPUs or more (``kernels/compile_ahead.py``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_interleaved import package_path  # noqa: E402  (a checkout's package with its own kernels)

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, REPO)
import os
import numpy as np
import fastbp as fb
imported = time.perf_counter() - t0
assert os.path.realpath(fb.kernels.__file__).startswith(KERNELS), (fb.kernels.__file__, KERNELS)  # that checkout's
rng = np.random.default_rng(0)
X = rng.integers(0, 256, (200, 64)).astype(np.uint8)
if SPARSE:
    X[rng.random(X.shape) < 0.85] = 0
y = np.arange(200) % 10
backend = fb.get_backend("numba", dtype=DTYPE, threads=THREADS)
def net(seed=0):
    return fb.Network.from_sizes([64, 30, 10], backend=backend, seed=seed)
if KIND == "predict":
    t = time.perf_counter(); net().predict(X); compile_s = time.perf_counter() - t
elif KIND == "ensemble":
    h = fb.Ensemble([net(k) for k in range(3)]).fit(X, y, epochs=1, batch_size=10, lr=0.5)
    compile_s = h[0]["compile_seconds"] if isinstance(h, list) else h["compile_seconds"]
else:
    opt = fb.Adam(lr=0.001) if KIND == "adam" else None
    h = net().fit(X, y, epochs=1, batch_size=10, lr=0.5, **({"optimizer": opt} if opt else {}))
    compile_s = h["compile_seconds"]
print(json.dumps({"compile": compile_s, "import": imported, "engine": None if KIND == "predict" else
                  (h[0] if isinstance(h, list) else h)["engine"]}))
"""

# (label, kind, dtype, threads, sparse)
STEPS = [
    ("default: float32, one thread, SGD", "fit", "float32", 1, False),
    ("first predict (a new network)", "predict", "float32", 1, False),
    ("float64", "fit", "float64", 1, False),
    ("two threads", "fit", "float32", 2, False),
    ("ensemble of 3", "ensemble", "float32", 1, False),
    ("sparse input, one thread", "fit", "float32", 1, True),
    ("sparse input, two threads", "fit", "float32", 2, True),
    ("Adam", "adam", "float32", 1, False),
    ("load: the default again, new process", "fit", "float32", 1, False),
    ("load: float64 again", "fit", "float64", 1, False),
    ("load: two threads again", "fit", "float32", 2, False),
    ("load: sparse input again", "fit", "float32", 1, True),
]


def run_step(repo, cache, kind, dtype, threads, sparse):
    """One step in a new process; ``repo``: (the folder to import fastbp from, the checkout)."""
    path, checkout = repo
    kernels = os.path.realpath(os.path.join(checkout, "kernels"))
    code = (f"REPO={path!r}; KERNELS={kernels!r}; KIND={kind!r}; DTYPE={dtype!r}; THREADS={threads}; "
            f"SPARSE={sparse}\n" + CHILD)
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    t = datetime.datetime.now()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    wall = (datetime.datetime.now() - t).total_seconds()
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall}


BREAKDOWN = r"""
import collections, os, sys, time
sys.path.insert(0, REPO)
import numpy as np
from numba.core import event

own, count, stack = collections.defaultdict(float), collections.Counter(), []


class Listener(event.Listener):
    def on_start(self, e):
        stack.append([e.data["dispatcher"].py_func, time.perf_counter(), 0.0])

    def on_end(self, e):
        func, t0, inner = stack.pop()
        seconds = time.perf_counter() - t0
        name = f"{func.__module__.rsplit('.', 1)[-1]}.{func.__name__}"
        own[name] += seconds - inner
        count[name] += 1
        if stack:
            stack[-1][2] += seconds


event.register("numba:compile", Listener())
import fastbp as fb
X = np.random.default_rng(0).integers(0, 256, (200, 64)).astype(np.uint8)
t = time.perf_counter()
fb.Network.from_sizes([64, 30, 10], backend=fb.get_backend("numba"), seed=0).fit(X, np.arange(200) % 10, epochs=1)
print(f"default fit, first run: {time.perf_counter() - t:.2f} s; {sum(count.values())} compiled functions, "
      f"{sum(own.values()):.2f} s compiling")
print("| kernel | own seconds | versions |\n|---|---:|---:|")
for name, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
    print(f"| {name} | {seconds:.2f} | {count[name]} |")
"""


def breakdown(repo):
    with tempfile.TemporaryDirectory() as cache:
        subprocess.run([sys.executable, "-c", f"REPO={package_path(repo, cache)!r}\n" + BREAKDOWN], check=True,
                       env=dict(os.environ, NUMBA_CACHE_DIR=os.path.join(cache, "numba"), FASTBP_COMPILE_AHEAD="0"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", action="append", help="a checkout to measure (default: this one); repeatable")
    ap.add_argument("--breakdown", action="store_true", help="seconds per compiled kernel of the default fit")
    args = ap.parse_args(argv)
    if args.breakdown:
        return breakdown(os.path.abspath((args.repo or [HERE])[-1]))
    repos = [os.path.abspath(r) for r in (args.repo or [HERE])]
    import llvmlite.binding as llvm
    import numba

    sys.path.insert(0, HERE)
    from fastbp.bench import machine  # (this checkout's: the machine line only)
    print(f"{datetime.date.today()}, {machine()[0]} ({llvm.get_host_cpu_name()}), Python {platform.python_version()}, "
          f"Numba {numba.__version__}, {os.cpu_count()} CPUs")
    names = [os.path.basename(r.rstrip("/")) or r for r in repos]
    print("\n| step (new process, same cache) | " + " | ".join(f"{n}: compile or load, s | {n}: process, s"
                                                        for n in names) + " | engine |")
    print("|---|" + "---:|---:|" * len(repos) + "---|")
    with tempfile.TemporaryDirectory() as tmp:
        caches = [os.path.join(tmp, str(i)) for i in range(len(repos))]
        # each checkout's fastbp WITH its kernels (a plain sys.path entry would take the installed kernels)
        paths = [(package_path(repo, os.path.join(tmp, f"pkg{i}")), repo) for i, repo in enumerate(repos)]
        for label, *step in STEPS:
            results = [run_step(path, cache, *step) for path, cache in zip(paths, caches)]
            cells = " | ".join(f"{r['compile']:.2f} | {r['wall']:.1f}" for r in results)
            print(f"| {label} | {cells} | {results[-1]['engine'] or '-'} |", flush=True)


if __name__ == "__main__":
    main()
