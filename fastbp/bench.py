"""Side-by-side training speed of fastbp's backends and of other engines, one table: ``fastbp bench``.

    fastbp bench                                        # Fashion-MNIST, 784-30-10, batch 10, lr 3.0
    fastbp bench --epochs 10 --engines numpy-f32,numba-f32-t1,numba-f32-t2
    fastbp bench --dataset digits --engines numpy,numba --json bench.json --plot bench.png
    fastbp bench --compare bench.json                   # ratios to a baseline; exit 1 if slower
    fastbp bench --dataset mnist-test --batch-size 100
    fastbp bench --dataset mnist-test --engines sparse   # the sparse first layer against the dense one
    fastbp bench --ensemble 16                          # adds the ensemble rows (16 networks at once)
    fastbp bench --ensemble 16 --engines ensemble       # only the ensemble rows
    python scripts/bench.py ...                         # the same, from the repository (and --gpu)

``--engines`` takes names or families: ``numpy`` (numpy-f32, numpy-f64), ``numba`` (numba-f32-t1,
..., numba-f64-t2: numba's default, sparse="auto"), ``sparse`` (numba-f32-t1-dense,
numba-f32-t1-sparse and the two-thread pair: the first layer dense or sparse, forced), ``torch``,
``ensemble``; ``all`` (the default) is every single-network row. The notes name the engine that ran. ``--json PATH``
writes ``{"machine", "date", "config", "args", "results"}``, each result with ``engine``,
``label``, ``seconds`` (per epoch), ``seconds_per_epoch`` (their median), ``samples_per_second``,
``accuracy`` and notes. ``--plot PATH`` draws samples per second per engine (log scale; the
machine and date in the title; needs the ``plot`` extra). ``--compare BASELINE.json`` prints each
engine's time ratio to the baseline's and exits 1 when one is slower by more than
``--tolerance`` (default 0.10); a baseline of another configuration (dataset, batch size, lr,
threads, ensemble size) is refused with what differs. Every bad argument is a one-line error,
exit 2, before any timing starts; progress per engine goes to stderr.

Every engine trains the same network (784-30-10 sigmoid, quadratic loss; scikit-learn's
MLPClassifier has its own loss, log-loss with a softmax output) on the same data, in its own
subprocess, with BLAS and PyTorch pinned to ``--blas-threads`` threads (threadpoolctl,
torch.set_num_threads) and fastbp's numba backend at the thread count in the engine's name.
Columns: seconds per epoch (median over the epochs; compilation excluded), samples per second,
the ratio of the engine's time to fastbp numba's (float32, first thread count given), and test
accuracy after the run. OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are removed from the subprocesses'
environment so that OpenBLAS picks its kernel for this CPU (the table shows which it ran).

Ensemble rows (``--ensemble N``, or named in ``--engines``; off by default): N networks of the
same shape, member k from seed k, trained together or one after another: fastbp.Ensemble on numba
float32 with 1 or 2 threads (``ensemble-f32-t1``, ``ensemble-f32-t2``), the N fastbp.Network runs
one after another on numba float32, 1 thread (``sequential-f32-t1``, the baseline), PyTorch's
torch.func ensemble (``torch-func-ensemble``: the members' parameters stacked by
torch.func.stack_module_state, one SGD step per mini-batch vmapped over the members, each member
with its own sample order) and N runs of the hand-written PyTorch engine one after another
(``torch-sequential``). Their seconds per epoch are for all N members together, samples per second
count N x n_train samples an epoch, the ratio column is relative to ``sequential-f32-t1`` (the
notes say so) and the accuracy is the members' mean (min and max in the notes).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

SPARSE_ENGINES = ("numba-f32-t1-dense", "numba-f32-t1-sparse", "numba-f32-t2-dense", "numba-f32-t2-sparse")
ENGINES = ("numpy-f32", "numpy-f64", "numba-f32-t1", "numba-f32-t2", "numba-f64-t1", "numba-f64-t2",
           *SPARSE_ENGINES, "torch-manual", "torch-autograd", "sklearn")
ENSEMBLE_ENGINES = ("ensemble-f32-t1", "ensemble-f32-t2", "sequential-f32-t1", "torch-func-ensemble",
                    "torch-sequential")
ENSEMBLE_REF = "sequential-f32-t1"  # the ensemble rows' ratio column is relative to this one
ENSEMBLE_MEMBERS = 16  # members when ensemble engines are named in --engines without --ensemble N
SIZES = (784, 30, 10)


# --- data ------------------------------------------------------------------------------------
def load(name):
    """(X_train, y_train, X_test, y_test), uint8 images flattened."""
    import fastbp as fb

    if name == "fashion-mnist":
        d = fb.datasets.load_fashion_mnist(download=False)
    elif name == "mnist":
        d = fb.datasets.load_mnist(download=False)
    elif name == "mnist-test":  # the 10k MNIST test digits, split 8,000 / 2,000
        folder = os.environ.get("FASTBP_MNIST_DIR", "/work/shared/data/mnist")
        X = fb.datasets.read_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))
        y = fb.datasets.read_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
        X = np.ascontiguousarray(X.reshape(len(X), -1))
        return X[:8000], y[:8000], X[8000:], y[8000:]
    elif name == "digits":
        d = fb.datasets.load_digits()
    else:
        raise SystemExit(f"--dataset: expected fashion-mnist, mnist, mnist-test or digits, got {name!r}")
    return d.X_train, d.y_train, d.X_test, d.y_test


# --- one engine, in its own process ------------------------------------------------------------
def run_fastbp(engine, data, args):
    import fastbp as fb

    X, y, Xt, yt = data
    parts = engine.split("-")  # numba-f32-t1[-dense|-sparse]: numba's sparse="auto" without a suffix
    kind, dtype = parts[0], {"f32": "float32", "f64": "float64"}[parts[1]]
    options = {}
    if kind == "numba":
        options = {"threads": threads_of(engine), "sparse": {"dense": False, "sparse": True}.get(parts[-1], "auto")}
    backend = fb.get_backend(kind, dtype, **options)
    net = fb.Network.from_sizes([X.shape[1], *SIZES[1:-1], int(y.max()) + 1], backend=backend, seed=0)
    h = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    extra = {"compile_s": h["compile_seconds"]}
    if kind == "numba":
        extra["cpu"] = backend.info()["cpu_name"]
        extra["fastbp_engine"] = [h["engine"]]
    return h["seconds"], net.evaluate(Xt, yt)["accuracy"], extra


def run_fastbp_ensemble(engine, data, args):
    """N networks (member k from seed k) on numba float32: one fb.Ensemble (ensemble-f32-tT) or
    N fb.Network fits one after another (sequential-f32-t1). Seconds per epoch: all N members."""
    import fastbp as fb

    X, y, Xt, yt = data
    n_members, sizes = args.ensemble, [X.shape[1], *SIZES[1:-1], int(y.max()) + 1]
    threads = int(engine.split("-t")[1])
    backend = fb.get_backend("numba", "float32", threads=threads)
    fit = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    if engine.startswith("ensemble"):
        ens = fb.Ensemble.from_sizes(sizes, n_models=n_members, seeds=range(n_members), activation="sigmoid",
                                     loss="quadratic", backend=backend)
        h = ens.fit(X, y, **fit)
        seconds, compile_s, engines = h["seconds"], h["compile_seconds"], [h["engine"]]
        accs = [s["accuracy"] for s in ens.evaluate(Xt, yt)]
    else:  # one after another, each a plain Network, as a user without fb.Ensemble would
        per_member, compile_s, engines, accs = [], 0.0, [], []
        for k in range(n_members):
            net = fb.Network.from_sizes(sizes, activation="sigmoid", loss="quadratic", backend=backend, seed=k)
            h = net.fit(X, y, **fit)
            per_member.append(h["seconds"])
            compile_s += h["compile_seconds"]
            engines.append(h["engine"])
            accs.append(net.evaluate(Xt, yt)["accuracy"])
        seconds = [float(sum(epoch)) for epoch in zip(*per_member)]  # epoch e of every member
    extra = {"compile_s": compile_s, "cpu": backend.info()["cpu_name"], "fastbp_engine": sorted(set(engines))}
    return seconds, accs, extra


def torch_init(n_in, n_out, gen):
    """The hand-written engine's parameters: W ~ N(0, 1/n_in), b = 0, drawn from ``gen``."""
    import torch

    W1 = torch.randn(n_in, SIZES[1], generator=gen) / n_in ** 0.5
    W2 = torch.randn(SIZES[1], n_out, generator=gen) / SIZES[1] ** 0.5
    return W1, torch.zeros(SIZES[1]), W2, torch.zeros(n_out)


def torch_manual(Xf, Y, Xtf, args, seed):
    """One run of the hand-written engine (forward and backward written out, no autograd) from
    ``seed``: (seconds per epoch, test outputs)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    n, bs, lr = len(Xf), args.batch_size, args.lr
    W1, b1, W2, b2 = torch_init(Xf.shape[1], Y.shape[1], gen)
    seconds = []
    with torch.no_grad():
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, bs):
                idx = order[s:s + bs]
                x, t = Xf[idx], Y[idx]
                a1 = torch.sigmoid(x @ W1 + b1)
                a2 = torch.sigmoid(a1 @ W2 + b2)
                d2 = (a2 - t) * a2 * (1 - a2)
                d1 = (d2 @ W2.T) * a1 * (1 - a1)
                step = lr / len(idx)
                W2.sub_(a1.T @ d2, alpha=step)
                b2.sub_(d2.sum(0), alpha=step)
                W1.sub_(x.T @ d1, alpha=step)
                b1.sub_(d1.sum(0), alpha=step)
            seconds.append(time.perf_counter() - t0)
        out = torch.sigmoid(torch.sigmoid(Xtf @ W1 + b1) @ W2 + b2)
    return seconds, out


def torch_func_ensemble(Xf, Y, Xtf, args):
    """N members in one torch.func program: N copies of the 784-30-10 sigmoid module (member k
    initialised as torch_manual's seed k), their parameters stacked by stack_module_state, and per
    mini-batch one functional SGD step (forward, quadratic loss, torch.func.grad, update) vmapped
    over the members, each member with its own shuffled order: (seconds per epoch, test outputs
    (N, n_test, n_out))."""
    import copy

    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    n_members, n, bs, lr = args.ensemble, len(Xf), args.batch_size, args.lr
    gens = [torch.Generator().manual_seed(k) for k in range(n_members)]
    models = []
    for gen in gens:
        W1, b1, W2, b2 = torch_init(Xf.shape[1], Y.shape[1], gen)
        model = torch.nn.Sequential(torch.nn.Linear(Xf.shape[1], SIZES[1]), torch.nn.Sigmoid(),
                                    torch.nn.Linear(SIZES[1], Y.shape[1]), torch.nn.Sigmoid())
        with torch.no_grad():
            for layer, W, b in ((model[0], W1, b1), (model[2], W2, b2)):
                layer.weight.copy_(W.T)
                layer.bias.copy_(b)
        models.append(model)
    params, _ = stack_module_state(models)  # no buffers in this module
    params = {k: v.detach() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p, x, t):  # one member's mean quadratic loss over its batch
        return 0.5 * ((functional_call(base, p, (x,)) - t) ** 2).sum(1).mean()

    def sgd_step(p, x, t):
        g = grad(loss)(p, x, t)
        return {k: p[k] - lr * g[k] for k in p}

    step = vmap(sgd_step)  # over the members: parameters (N, ...), x (N, bs, n_in), t (N, bs, n_out)
    seconds = []
    with torch.no_grad():  # grad() differentiates inside; the updates need no graph
        first = torch.arange(min(bs, n)).expand(n_members, -1)
        step(params, Xf[first], Y[first])  # untimed warm-up (the first call sets up, ~1 s), discarded
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            orders = torch.stack([torch.randperm(n, generator=gen) for gen in gens])  # (N, n)
            for s in range(0, n, bs):
                idx = orders[:, s:s + bs]
                params = step(params, Xf[idx], Y[idx])
            seconds.append(time.perf_counter() - t0)
        out = vmap(lambda p: functional_call(base, p, (Xtf,)))(params)
    return seconds, out


def run_torch(engine, data, args):
    import torch

    torch.set_num_threads(args.blas_threads)
    torch.manual_seed(0)
    X, y, Xt, yt = data
    n_out = int(y.max()) + 1
    Xf = torch.from_numpy(X.astype(np.float32) / 255)
    Xtf = torch.from_numpy(Xt.astype(np.float32) / 255)
    Y = torch.nn.functional.one_hot(torch.from_numpy(y), n_out).float()
    n, bs, lr = len(X), args.batch_size, args.lr
    extra = {"torch": torch.__version__}
    if engine == "torch-manual":  # forward and backward written out, no autograd
        seconds, out = torch_manual(Xf, Y, Xtf, args, seed=0)
    elif engine == "torch-sequential":  # N runs of torch-manual one after another, member k from seed k
        runs = [torch_manual(Xf, Y, Xtf, args, seed=k) for k in range(args.ensemble)]
        seconds = [float(sum(epoch)) for epoch in zip(*(r[0] for r in runs))]
        return seconds, [float((r[1].argmax(1).numpy() == yt).mean()) for r in runs], extra
    elif engine == "torch-func-ensemble":
        seconds, out = torch_func_ensemble(Xf, Y, Xtf, args)
        return seconds, [float(a) for a in (out.argmax(-1).numpy() == yt).mean(1)], extra
    else:  # nn.Linear + autograd + optim.SGD, the quadratic loss
        model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], SIZES[1]), torch.nn.Sigmoid(),
                                    torch.nn.Linear(SIZES[1], n_out), torch.nn.Sigmoid())
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        seconds = []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n)
            for s in range(0, n, bs):
                idx = order[s:s + bs]
                opt.zero_grad()
                loss = 0.5 * ((model(Xf[idx]) - Y[idx]) ** 2).sum(1).mean()
                loss.backward()
                opt.step()
            seconds.append(time.perf_counter() - t0)
        with torch.no_grad():
            out = model(Xtf)
    acc = float((out.argmax(1).numpy() == yt).mean())
    return seconds, acc, extra


def run_sklearn(engine, data, args):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X, y, Xt, yt = data
    Xf, Xtf = X.astype(np.float32) / 255, Xt.astype(np.float32) / 255
    # log-loss with a softmax output: lr 3.0 is not comparable; 0.1 is sklearn's usual scale
    clf = MLPClassifier(hidden_layer_sizes=(SIZES[1],), activation="logistic", solver="sgd",
                        batch_size=args.batch_size, learning_rate_init=args.sklearn_lr, momentum=0.0,
                        alpha=0.0, max_iter=1, warm_start=True, random_state=0, tol=0, n_iter_no_change=10**9)
    seconds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            clf.fit(Xf, y)
            seconds.append(time.perf_counter() - t0)
    return seconds, float(clf.score(Xtf, yt)), {"lr": args.sklearn_lr}


def run_one(engine, args):
    from threadpoolctl import threadpool_info, threadpool_limits

    data = load(args.dataset)
    with threadpool_limits(args.blas_threads):
        blas = [f"{i['internal_api']} {i.get('architecture', '')} x{i['num_threads']}" for i in threadpool_info()]
        if engine.startswith(("numpy", "numba")):
            seconds, acc, extra = run_fastbp(engine, data, args)
        elif engine.startswith(("ensemble", "sequential")):
            seconds, acc, extra = run_fastbp_ensemble(engine, data, args)
        elif engine.startswith("torch"):
            seconds, acc, extra = run_torch(engine, data, args)
        else:
            seconds, acc, extra = run_sklearn(engine, data, args)
    if engine in ENSEMBLE_ENGINES:  # one accuracy per member: the mean, and each
        extra = {"members": len(acc), "accuracies": acc, **extra}
        acc = float(np.mean(acc))
    return {"engine": engine, "seconds": seconds, "accuracy": acc, "n": len(data[0]), "blas": blas, **extra}


# --- the table ---------------------------------------------------------------------------------
def available(engine):
    import importlib.util

    if engine.startswith("torch"):
        return importlib.util.find_spec("torch") is not None
    if engine.startswith(("numba", "ensemble", "sequential")):
        return importlib.util.find_spec("numba") is not None
    return True


def machine():
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod, dist in (("numba", "numba"), ("torch", "torch"), ("sklearn", "scikit-learn")):
        try:  # the installed version, without importing the package (torch and sklearn take seconds)
            versions[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return model, os.cpu_count(), versions


DATASETS = ("fashion-mnist", "mnist", "mnist-test", "digits")
FAMILIES = {"numpy": ("numpy-f32", "numpy-f64"),
            "numba": ("numba-f32-t1", "numba-f32-t2", "numba-f64-t1", "numba-f64-t2"), "sparse": SPARSE_ENGINES,
            "torch": ("torch-manual", "torch-autograd"), "ensemble": ENSEMBLE_ENGINES}
CONFIG_KEYS = ("dataset", "batch_size", "lr", "sklearn_lr", "blas_threads", "ensemble")  # what a comparison needs equal


class BenchError(Exception):
    """A bad argument: a one-line message, exit 2, before any timing."""


def _check_output(path, option):
    from ._io import check_output

    try:
        check_output(path, option)
    except ValueError as e:
        raise BenchError(str(e)) from None


def _load_baseline(path, config):
    try:
        with open(path) as f:
            baseline = json.load(f)
    except OSError as e:
        raise BenchError(f"--compare: {path}: {e.strerror}") from None
    except ValueError as e:
        raise BenchError(f"--compare: {path}: not a JSON file written by fastbp bench ({e})") from None
    if not isinstance(baseline, dict) or not isinstance(baseline.get("results"), list):
        raise BenchError(f"--compare: {path}: not a JSON file written by fastbp bench (no results)")
    theirs = baseline.get("config") or {k: baseline.get("args", {}).get(k) for k in CONFIG_KEYS}
    differs = [f"{k} {theirs.get(k)!r} there, {config[k]!r} here" for k in CONFIG_KEYS if theirs.get(k) != config[k]]
    if differs:
        raise BenchError(f"--compare: {path} is of another configuration: {'; '.join(differs)}")
    return baseline


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except BenchError as e:
        print(f"fastbp bench: error: {e}", file=sys.stderr)
        return 2


def _main(argv):
    p = argparse.ArgumentParser(prog="fastbp bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default), mnist, mnist-test, digits")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=3.0)
    p.add_argument("--sklearn-lr", type=float, default=0.1)
    p.add_argument("--threads", default="1,2", help="numba thread counts to run, e.g. 1 or 1,2 (default)")
    p.add_argument("--blas-threads", type=int, default=1, help="threads for BLAS and PyTorch (default 1)")
    p.add_argument("--engines", default="all",
                   help=f"comma-separated, from {', '.join(ENGINES + ENSEMBLE_ENGINES)}; 'all' (default) is "
                        f"the first {len(ENGINES)}, plus the ensemble ones with --ensemble N; 'ensemble' names "
                        f"the ensemble ones")
    p.add_argument("--ensemble", type=int, default=None, metavar="N",
                   help="add the ensemble rows, N networks each (default: off; ensemble engines named in "
                        f"--engines train {ENSEMBLE_MEMBERS})")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--plot", help="also draw samples per second per engine into this PNG (the plot extra)")
    p.add_argument("--compare", metavar="BASELINE", help="a JSON of an earlier run: print the time ratios, exit 1 "
                                                         "when an engine is slower by more than --tolerance")
    p.add_argument("--tolerance", type=float, default=0.10, help="for --compare (default 0.10: 10%% slower)")
    p.add_argument("--dry-run", action="store_true", help="print the engines that would run, and stop")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ensemble is not None and args.ensemble < 1:
        p.error(f"--ensemble: expected an integer >= 1, got {args.ensemble}")

    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return 0

    # every argument is checked before any timing starts
    if args.dataset not in DATASETS:
        raise BenchError(f"--dataset: expected one of {', '.join(DATASETS)}, got {args.dataset!r}")
    for name, value, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--blas-threads", args.blas_threads, 1)):
        if value < low:
            raise BenchError(f"{name}: expected an integer >= {low}, got {value}")
    if not (args.lr > 0) or not (args.tolerance >= 0):
        raise BenchError(f"--lr and --tolerance: expected lr > 0 and tolerance >= 0, got {args.lr}, {args.tolerance}")
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        raise BenchError(f"--threads: expected thread counts such as 1,2, got {args.threads!r}") from None
    if args.engines == "all":
        wanted = ENGINES + (ENSEMBLE_ENGINES if args.ensemble else ())
    else:
        wanted = tuple(dict.fromkeys(x for e in args.engines.split(",") for x in FAMILIES.get(e, (e,))))
    unknown = [e for e in wanted if e not in ENGINES + ENSEMBLE_ENGINES]
    if unknown:
        raise BenchError(f"--engines: unknown {', '.join(unknown)}; expected some of "
                         f"{', '.join(ENGINES + ENSEMBLE_ENGINES)} (or all, {', '.join(FAMILIES)})")
    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot")
    if args.plot is not None:
        from .plots import PlotsUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotsUnavailable as e:
            raise BenchError(f"--plot: {e}") from None
    members = None
    if any(e in ENSEMBLE_ENGINES for e in wanted):
        members = args.ensemble = args.ensemble or ENSEMBLE_MEMBERS
    config = {k: getattr(args, k) for k in CONFIG_KEYS}
    baseline = _load_baseline(args.compare, config) if args.compare else None
    missing = [e for e in wanted if not available(e)]
    engines = [e for e in wanted if e not in missing
               and not (e.startswith(("numba", "ensemble")) and threads_of(e) not in threads)]

    model, cores, versions = machine()
    date = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
    print(f"# fastbp benchmark, {date}")
    print(f"# machine: {model}, {cores} cores; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"# {args.dataset}, inputs-{SIZES[1]}-classes sigmoid, quadratic loss, batch {args.batch_size}, "
          f"lr {args.lr}, {args.epochs} epochs, BLAS/torch threads {args.blas_threads}"
          + (f", ensembles of {members} members" if members else "") + "; "
          f"command: fastbp bench {' '.join(argv)}")
    if missing:
        print(f"# skipped, not installed: {', '.join(missing)}")
    if args.dry_run:
        print("# would run: " + ", ".join(engines))
        return 0
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update({k: str(args.blas_threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    results = []
    for i, engine in enumerate(engines):
        print(f"fastbp bench: [{i + 1}/{len(engines)}] {label(engine, members)}...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "fastbp.bench", "--one", engine, "--dataset", args.dataset,
               "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--lr", str(args.lr),
               "--sklearn-lr", str(args.sklearn_lr), "--blas-threads", str(args.blas_threads)]
        if engine in ENSEMBLE_ENGINES:
            cmd += ["--ensemble", str(members)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"# {engine}: failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    def median_of(name):
        r = next((r for r in results if r["engine"] == name), None)
        return float(np.median(r["seconds"])) if r else None

    ref_s = median_of(f"numba-f32-t{threads[0]}")
    ens_ref_s = median_of(ENSEMBLE_REF)
    print("\n| engine | s/epoch (median) | samples/s | x fastbp numba | test accuracy | notes |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        med = float(np.median(r["seconds"]))
        ensemble = r["engine"] in ENSEMBLE_ENGINES
        notes = []
        if ensemble:  # all members together; the ratio is to the sequential fastbp runs
            accs = r["accuracies"]
            notes.append(f"{r['members']} members; x = vs {ENSEMBLE_REF}")
            notes.append(f"accuracy min {min(accs):.4f} max {max(accs):.4f}")
        if "compile_s" in r:
            notes.append(f"compile {r['compile_s']:.2f} s")
        if "fastbp_engine" in r:
            notes.append("engine " + "/".join(r["fastbp_engine"]))
        if r["engine"] == "sklearn":
            notes.append(f"log-loss, lr {r['lr']}")
        if r["engine"].startswith(("numpy", "torch", "sklearn")) and r["blas"]:
            notes.append("; ".join(r["blas"]))
        base = ens_ref_s if ensemble else ref_s
        ratio = f"{med / base:.2f}" if base else "-"
        samples = r.get("members", 1) * r["n"] / med
        r.update(label=label(r["engine"], r.get("members")), seconds_per_epoch=med, samples_per_second=samples)
        print(f"| {r['label']} | {med:.4f} | {samples:,.0f} | {ratio} | "
              f"{r['accuracy']:.4f} | {', '.join(notes)} |")
    if args.json:
        from ._io import atomic_write

        with atomic_write(args.json, "w") as f:
            json.dump({"machine": [model, cores, versions], "date": date, "config": config, "args": vars(args),
                       "results": results}, f, indent=1)
    if args.plot:
        from .plots import bench_bars

        bench_bars([(r["label"], r["samples_per_second"]) for r in results], args.plot,
                   f"fastbp bench, {args.dataset}, batch {args.batch_size}: {model}, {cores} cores, {date}")
    if baseline is not None:
        return _compare(results, baseline, args.compare, args.tolerance)
    return 0


def _compare(results, baseline, path, tolerance):
    """Print each engine's time against the baseline's; 1 when one is slower by more than tolerance."""
    theirs = {r["engine"]: float(np.median(r["seconds"])) for r in baseline["results"]}
    print("\n| engine | baseline s/epoch | s/epoch | ratio | |\n| --- | ---: | ---: | ---: | --- |")
    slower = []
    for r in results:
        if r["engine"] not in theirs:
            print(f"| {r['label']} | - | {r['seconds_per_epoch']:.4f} | - | not in the baseline |")
            continue
        ratio = r["seconds_per_epoch"] / theirs[r["engine"]]
        verdict = "slower" if ratio > 1 + tolerance else "ok"
        if verdict == "slower":
            slower.append(r["engine"])
        print(f"| {r['label']} | {theirs[r['engine']]:.4f} | {r['seconds_per_epoch']:.4f} | {ratio:.2f} | {verdict} |")
    if slower:
        print(f"# slower than {path} by more than {tolerance:.0%}: {', '.join(slower)}")
        return 1
    return 0


def label(engine, members=None):
    names = {"numpy-f32": "fastbp numpy float32", "numpy-f64": "fastbp numpy float64",
             "torch-manual": "PyTorch CPU, hand-written backward", "torch-autograd": "PyTorch CPU, nn.Linear+autograd+SGD",
             "sklearn": "scikit-learn MLPClassifier (sgd)",
             "ensemble-f32-t1": f"fastbp Ensemble of {members}, numba float32, 1 thread",
             "ensemble-f32-t2": f"fastbp Ensemble of {members}, numba float32, 2 threads",
             "sequential-f32-t1": f"fastbp {members} Networks one after another, numba float32, 1 thread",
             "torch-func-ensemble": f"PyTorch CPU torch.func ensemble of {members} (vmap, grad)",
             "torch-sequential": f"PyTorch CPU {members} hand-written runs one after another"}
    if engine.startswith("numba"):
        parts = engine.split("-")
        layer = f", {parts[3]} first layer" if len(parts) > 3 else ""
        t = threads_of(engine)
        return f"fastbp numba float{parts[1][1:]}, {t} thread{'s' if t != 1 else ''}{layer}"
    return names[engine]


def threads_of(engine):
    """The thread count in a numba or ensemble engine's name (numba-f32-t2-sparse: 2)."""
    return int(next(p for p in engine.split("-") if p[0] == "t" and p[1:].isdigit())[1:])


if __name__ == "__main__":
    sys.exit(main())
