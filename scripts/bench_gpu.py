"""The GPU benchmark: seconds per epoch of the 784-30-10 sigmoid network (quadratic loss, float32,
lr 3.0) on one data set, for each engine and batch size, side by side in one run.

Engines (rows are engine x batch size):
- fastbp-cupy-fused   fastbp's cupy backend at small batches: the fused whole-epoch kernel;
- fastbp-cupy-cluster the fused kernel with each network split over N SMs (CupyBackend(cluster=N),
                      a thread-block cluster exchanging the output layer's partial sums through
                      distributed shared memory; sm_90): a row per N in --clusters, named
                      fastbp-cupy-clusterN;
- fastbp-cupy         fastbp's cupy backend at large batches, as a user gets it: the batched epoch
                      (cuBLAS products, one launch per step between them);
- fastbp-cupy-generic the same with fused=False: the network's generic per-batch loop (not run
                      unless named in --engines; shows what the batched epoch gains);
- torch-cuda-hand     PyTorch on the same GPU, forward/backward written by hand (matmuls);
- torch-cuda-graphs   the same step captured in CUDA graphs: GRAPH_STEPS mini-batches per graph
                      replay (the strongest one-network PyTorch peer: no Python or launch cost per
                      kernel), the chunk's rows copied into the graph's static input first;
- torch-cuda-autograd PyTorch on the same GPU, nn.Linear + autograd + torch.optim.SGD;
- fastbp-cupy-ensemble  --members networks (default 132: one per SM of an H100/H200) trained by
                      fastbp.Ensemble on the cupy backend (one launch per epoch, a block per
                      member), member k from seed k with its own sample order; its notes give
                      the kernel's own time (one launch over fixed orders, no host work);
- torch-func-ensemble the same members in PyTorch: parameters stacked along a model axis, the
                      hand-written step vmapped over them (torch.func.vmap), each member its own
                      order, captured in CUDA graphs as torch-cuda-graphs;
- fastbp-numba        fastbp's numba backend on the host CPU, for reference.

Every engine starts from the same initial weights, visits the data in its own shuffled order,
and is timed epoch by epoch after one untimed warm-up epoch (compilation, cuBLAS handles); GPU
timings end with a device synchronisation. Columns: networks trained, median s/epoch (all of
them), samples/s (networks x samples), time relative to fastbp with as many networks at the same
batch size, test accuracy after the timed epochs (an ensemble's: member 0's). The summary checks
the targets of the GPU issues (fused epoch <= 30 ms and >= 20x PyTorch; large batches >= 5x the
best CPU samples/s; accuracy >= 0.84 after --accuracy-epochs with the fused kernel; the ensemble
of --members in <= 2x one network's fused epoch, against torch.func).

    python scripts/bench_gpu.py --data fashion-mnist            # or a folder of IDX files
    python scripts/bench_gpu.py --engines fastbp-numba --data synthetic --n 5000   # CPU only
    python scripts/bench_gpu.py --dry-run                       # the plan, nothing run
    python scripts/bench_gpu.py --engines fastbp-cupy-ensemble,torch-func-ensemble --members 132

Without a GPU, any GPU engine stops the run with one clear message (exit status 1). A row that
fails otherwise is reported with its traceback and the others still run (exit status 1 at the end).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
import traceback

import numpy as np

ENGINES = ("fastbp-cupy-fused", "fastbp-cupy-cluster", "fastbp-cupy", "torch-cuda-hand", "torch-cuda-graphs", "torch-cuda-autograd",
           "fastbp-cupy-ensemble", "torch-func-ensemble", "fastbp-numba")
ALL_ENGINES = ENGINES + ("fastbp-cupy-generic",)
GPU_ENGINES = tuple(e for e in ALL_ENGINES if e != "fastbp-numba")
ENSEMBLE_ENGINES = ("fastbp-cupy-ensemble", "torch-func-ensemble")
SIZES = [784, 30, 10]
LR = 3.0
GRAPH_STEPS = 100  # mini-batches per captured CUDA graph (torch-cuda-graphs, torch-func-ensemble)


class Unavailable(RuntimeError):
    """An engine cannot run on this machine."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist, mnist, a folder of the four IDX files, or synthetic (random images: "
                        "for timings only, the accuracy means nothing)")
    p.add_argument("--n", type=int, default=None, help="use the first N training samples (default: all)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, from: " + ", ".join(ALL_ENGINES))
    p.add_argument("--small", default="10", help="small batch sizes (comma-separated; default 10)")
    p.add_argument("--large", default="1000,10000", help="large batch sizes (default 1000,10000)")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs per row (default 5; median reported)")
    p.add_argument("--accuracy-epochs", type=int, default=30,
                   help="epochs of the separate fused accuracy run (0: skip; default 30)")
    p.add_argument("--threads", type=int, default=1, help="numba threads (1 or 2)")
    p.add_argument("--clusters", default="2,4,8", help="blocks per network of the fastbp-cupy-cluster rows "
                                                       "(comma-separated, from 2, 4, 8; default 2,4,8)")
    p.add_argument("--members", type=int, default=132,
                   help="networks of the ensemble rows (default 132: one per SM of an H100/H200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ALL_ENGINES:
            p.error(f"--engines: unknown engine {e!r}; expected some of {', '.join(ALL_ENGINES)}")
    args.engines = engines
    try:
        args.small = [int(b) for b in args.small.split(",") if b.strip()]
        args.large = [int(b) for b in args.large.split(",") if b.strip()]
    except ValueError:
        p.error(f"--small/--large: expected comma-separated integers, got {args.small!r} / {args.large!r}")
    if any(b < 1 for b in args.small + args.large):
        p.error("--small/--large: batch sizes must be positive")
    if args.epochs < 1:
        p.error(f"--epochs: expected a positive integer, got {args.epochs}")
    try:
        args.clusters = [int(c) for c in args.clusters.split(",") if c.strip()]
    except ValueError:
        p.error(f"--clusters: expected comma-separated integers, got {args.clusters!r}")
    if any(c not in (2, 4, 8) for c in args.clusters):
        p.error(f"--clusters: expected sizes from 2, 4, 8, got {args.clusters}")
    if args.members < 1:
        p.error(f"--members: expected a positive integer, got {args.members}")
    if args.n is not None and args.n < 1:
        p.error(f"--n: expected a positive integer, got {args.n}")
    return args


def plan(args):
    """The rows to run: (engine, batch size)."""
    rows = []
    for engine in args.engines:
        if engine == "fastbp-cupy-cluster":
            rows += [(f"fastbp-cupy-cluster{c}", b) for c in args.clusters for b in args.small]
            continue
        if engine in ("fastbp-cupy-fused",) + ENSEMBLE_ENGINES:
            batches = args.small
        elif engine in ("fastbp-cupy", "fastbp-cupy-generic"):
            batches = args.large
        else:
            batches = args.small + args.large
        rows += [(engine, b) for b in batches]
    return rows


# --- data ---------------------------------------------------------------------------------------
def load_data(name, n, seed):
    if name == "synthetic":  # random images with labels from a fixed random linear map (learnable)
        rng = np.random.default_rng(seed)
        count = n or 60000
        X = rng.integers(0, 256, (count + 10000, 784)).astype(np.uint8)
        proj = rng.normal(size=(784, 10))
        y = np.argmax((X / 255.0 - 0.5) @ proj, axis=1)
        return X[:count], y[:count], X[count:], y[count:], "synthetic"
    from fastbp import datasets

    split = datasets.load_dataset(name, download=False)
    X, y, Xt, yt = split[:4]
    if n:
        X, y = X[:n], y[:n]
    return X, y, Xt, yt, split.name


# --- engines: each returns (seconds of each timed epoch, test accuracy) --------------------------
def initial_params(seed):
    import fastbp as fb

    return fb.Network.from_sizes(SIZES, backend="numpy", seed=seed).get_params()


def run_fastbp(backend, X, y, Xt, yt, batch, epochs, params, seed, **options):
    import fastbp as fb
    from fastbp import kernels

    try:
        be = kernels.get_backend(backend, "float32", **options)
    except kernels.BackendUnavailable as e:
        raise Unavailable(str(e)) from None
    net = fb.Network.from_sizes(SIZES, backend=be, seed=seed)
    net.set_params(params)
    h = net.fit(X, y, epochs=epochs + 1, batch_size=batch, lr=LR)
    return h.seconds[1:], net.evaluate(Xt, yt)["accuracy"], net


def torch_device(device="cuda"):
    """(torch, the device); Unavailable without PyTorch or, for "cuda", without a CUDA GPU."""
    try:
        import torch
    except ImportError as e:
        raise Unavailable(f"PyTorch is not installed ({e})") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise Unavailable(f"PyTorch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False)")
    return torch, torch.device(device)


def _sync(torch, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _torch_data(torch, dev, X, y):
    return torch.as_tensor(X, device=dev), torch.nn.functional.one_hot(torch.as_tensor(y, device=dev), 10).float()


def _torch_accuracy(torch, dev, P, Xt, yt):
    W1, b1, W2, b2 = P
    out = torch.sigmoid(torch.sigmoid((torch.as_tensor(Xt, device=dev).float() / 255.0) @ W1 + b1) @ W2 + b2)
    return float((out.argmax(1).cpu().numpy() == yt).mean())


def sgd_steps(torch, P, x_rows, t_rows, batch):
    """Plain SGD (lr LR, mean quadratic loss, sigmoid) over consecutive rows in mini-batches of
    ``batch``, the hand-written step, in place on P = [W1, b1, W2, b2]."""
    W1, b1, W2, b2 = P
    for start in range(0, x_rows.shape[0], batch):
        x, t = x_rows[start:start + batch], t_rows[start:start + batch]
        a1 = torch.sigmoid(torch.addmm(b1, x, W1))
        a2 = torch.sigmoid(torch.addmm(b2, a1, W2))
        d2 = (a2 - t) * a2 * (1 - a2)
        d1 = (d2 @ W2.T) * a1 * (1 - a1)
        step = LR / x.shape[0]
        W2.sub_(a1.T @ d2, alpha=step)
        b2.sub_(d2.sum(0), alpha=step)
        W1.sub_(x.T @ d1, alpha=step)
        b1.sub_(d1.sum(0), alpha=step)


def graphed(torch, dev, fn, state):
    """``fn`` captured as a CUDA graph (returns its replay) on a GPU; ``fn`` itself elsewhere.
    ``state``: the tensors ``fn`` changes in place, put back after the warm-up runs that capturing
    needs (the capture itself runs nothing)."""
    if dev.type != "cuda":
        return fn
    saved = [t.clone() for t in state]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for t, v in zip(state, saved):
        t.copy_(v)
    return graph.replay


def run_torch_hand(X, y, Xt, yt, batch, epochs, params, seed, device="cuda"):
    """The hand-written step, one mini-batch at a time: (seconds per timed epoch, accuracy, [W1, b1, W2, b2])."""
    torch, dev = torch_device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    Xd, Yd = _torch_data(torch, dev, X, y)
    P = [torch.tensor(p[k], device=dev, dtype=torch.float32) for p in params for k in ("W", "b")]
    n = Xd.shape[0]
    times = []
    with torch.no_grad():
        for epoch in range(epochs + 1):
            _sync(torch, dev)
            t0 = time.perf_counter()
            order = torch.randperm(n, device=dev, generator=gen)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                sgd_steps(torch, P, Xd[idx].float() * (1.0 / 255.0), Yd[idx], batch)
            _sync(torch, dev)
            times.append(time.perf_counter() - t0)
        return times[1:], _torch_accuracy(torch, dev, P, Xt, yt), P


def run_torch_graphs(X, y, Xt, yt, batch, epochs, params, seed, device="cuda"):
    """The hand-written step over GRAPH_STEPS mini-batches per CUDA graph replay: per chunk, the
    chunk's rows gathered (in the epoch's order) into the graph's static inputs, then one replay;
    a last partial chunk runs without a graph. The same updates as run_torch_hand with that seed."""
    torch, dev = torch_device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    Xd, Yd = _torch_data(torch, dev, X, y)
    P = [torch.tensor(p[k], device=dev, dtype=torch.float32) for p in params for k in ("W", "b")]
    n = Xd.shape[0]
    rows = min(n, batch * GRAPH_STEPS)
    xs, ts = torch.zeros(rows, Xd.shape[1], device=dev), torch.zeros(rows, 10, device=dev)
    times = []
    with torch.no_grad():
        replay = graphed(torch, dev, lambda: sgd_steps(torch, P, xs, ts, batch), P)
        for epoch in range(epochs + 1):
            _sync(torch, dev)
            t0 = time.perf_counter()
            order = torch.randperm(n, device=dev, generator=gen)
            whole = n - n % rows
            for start in range(0, whole, rows):
                idx = order[start:start + rows]
                xs.copy_(Xd[idx]).mul_(1.0 / 255.0)
                ts.copy_(Yd[idx])
                replay()
            if whole < n:
                idx = order[whole:]
                sgd_steps(torch, P, Xd[idx].float() * (1.0 / 255.0), Yd[idx], batch)
            _sync(torch, dev)
            times.append(time.perf_counter() - t0)
        return times[1:], _torch_accuracy(torch, dev, P, Xt, yt), P


def run_torch_func_ensemble(X, y, Xt, yt, batch, epochs, params_list, seed, device="cuda"):
    """``len(params_list)`` members in one torch.func program: their parameters stacked along a
    model axis, the hand-written step (the same as run_torch_hand's) vmapped over the members
    (torch.func.vmap), member k over its own order (generator seeded seed + k), GRAPH_STEPS
    mini-batches per CUDA graph replay on a GPU. Member k's updates equal run_torch_hand's with
    seed + k. Returns (seconds per timed epoch, member 0's accuracy, [W1, b1, W2, b2] stacked)."""
    torch, dev = torch_device(device)
    from torch.func import vmap

    M = len(params_list)
    gens = [torch.Generator(device=dev).manual_seed(seed + k) for k in range(M)]
    Xd, Yd = _torch_data(torch, dev, X, y)
    P = [torch.stack([torch.as_tensor(p[i][k], device=dev).float() for p in params_list])
         for i in range(2) for k in ("W", "b")]
    n = Xd.shape[0]

    def member_step(W1, b1, W2, b2, x, t):  # one member's step on its batch: its new parameters
        a1 = torch.sigmoid(x @ W1 + b1)
        a2 = torch.sigmoid(a1 @ W2 + b2)
        d2 = (a2 - t) * a2 * (1 - a2)
        d1 = (d2 @ W2.T) * a1 * (1 - a1)
        step = LR / x.shape[0]
        return W1 - step * (x.T @ d1), b1 - step * d1.sum(0), W2 - step * (a1.T @ d2), b2 - step * d2.sum(0)

    step = vmap(member_step)  # parameters (M, ...), x (M, batch, 784), t (M, batch, 10)

    def steps(xm, tm):
        for start in range(0, xm.shape[1], batch):
            new = step(*P, xm[:, start:start + batch], tm[:, start:start + batch])
            for p, q in zip(P, new):
                p.copy_(q)

    rows = min(n, batch * GRAPH_STEPS)
    xs, ts = torch.zeros(M, rows, Xd.shape[1], device=dev), torch.zeros(M, rows, 10, device=dev)
    times = []
    with torch.no_grad():
        replay = graphed(torch, dev, lambda: steps(xs, ts), P)
        for epoch in range(epochs + 1):
            _sync(torch, dev)
            t0 = time.perf_counter()
            orders = torch.stack([torch.randperm(n, device=dev, generator=g) for g in gens])  # (M, n)
            whole = n - n % rows
            for start in range(0, whole, rows):
                idx = orders[:, start:start + rows]
                xs.copy_(Xd[idx]).mul_(1.0 / 255.0)
                ts.copy_(Yd[idx])
                replay()
            if whole < n:
                idx = orders[:, whole:]
                steps(Xd[idx].float() * (1.0 / 255.0), Yd[idx])
            _sync(torch, dev)
            times.append(time.perf_counter() - t0)
        return times[1:], _torch_accuracy(torch, dev, [p[0] for p in P], Xt, yt), P


def run_torch_autograd(X, y, Xt, yt, batch, epochs, params, seed):
    torch, dev = torch_device("cuda")
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, 30), torch.nn.Sigmoid(),
                                torch.nn.Linear(30, 10), torch.nn.Sigmoid()).to(dev)
    with torch.no_grad():  # nn.Linear keeps W as (out, in)
        for layer, p in zip((model[0], model[2]), params):
            layer.weight.copy_(torch.as_tensor(p["W"].T))
            layer.bias.copy_(torch.as_tensor(p["b"]))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    Xd, Yd = _torch_data(torch, dev, X, y)
    n = Xd.shape[0]
    times = []
    for epoch in range(epochs + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        order = torch.randperm(n, device=dev)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            x = Xd[idx].float() * (1.0 / 255.0)
            loss = 0.5 * ((model(x) - Yd[idx]) ** 2).sum() / idx.shape[0]  # quadratic, mean over the batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        out = model(torch.as_tensor(Xt, device=dev).float() / 255.0)
        acc = (out.argmax(1).cpu().numpy() == yt).mean()
    return times[1:], float(acc), None


def run_fastbp_ensemble(X, y, Xt, yt, batch, epochs, members, seed, backend="cupy"):
    """``members`` networks (member k from seed + k) trained by fastbp.Ensemble: (seconds per
    timed epoch, member 0's accuracy, notes: the engine, and on the cupy fused engine the
    kernel's own seconds per epoch, median of 3 launches over fixed orders)."""
    import fastbp as fb
    from fastbp import kernels

    try:
        be = kernels.get_backend(backend, "float32")
    except kernels.BackendUnavailable as e:
        raise Unavailable(str(e)) from None
    ens = fb.Ensemble.from_sizes(SIZES, n_models=members, seeds=[seed + k for k in range(members)], backend=be)
    h = ens.fit(X, y, epochs=epochs + 1, batch_size=batch, lr=LR)
    accuracy = ens[0].evaluate(Xt, yt)["accuracy"]
    notes = [f"engine {h['engine']}"]
    if h["engine"] == "cupy-fused-members":
        data, targets = be.prepare_data(X), be.asarray(np.eye(10, dtype=np.float32)[y])
        config = be.fused_config(ens[0].layers, ens[0].loss, data, targets, batch)
        orders = np.stack([np.random.default_rng(k).permutation(len(X)) for k in range(members)])
        opts = [fb.SGD(LR) for _ in range(members)]
        kernel = []
        for _ in range(3):
            t0 = time.perf_counter()
            be._fused_epoch(config, [m.layers for m in ens], data, 1 / 255, targets, orders, opts)
            kernel.append(time.perf_counter() - t0)
        notes.append(f"one launch over fixed orders (orders copied, kernel, loss read back): "
                     f"{statistics.median(kernel):.4f} s")
    return h.seconds[1:], accuracy, notes


def run_row(engine, batch, data, args, params):
    """One row: (seconds per timed epoch, test accuracy, networks trained, notes)."""
    X, y, Xt, yt = data
    if engine.startswith("fastbp-cupy-cluster"):
        cluster = int(engine[len("fastbp-cupy-cluster"):])
        times, acc, net = run_fastbp("cupy", X, y, Xt, yt, batch, args.epochs, params, args.seed, cluster=cluster)
        be, notes = net.backend, []
        config = be.fused_config(net.layers, net.loss, be.prepare_data(X[:batch]), be.asarray(np.eye(10)[y[:batch]]),
                                 batch)
        if config is None or config["cluster"] != cluster:
            notes.append(f"ran with {'no fused kernel' if config is None else config['cluster']} blocks per network")
        return times, acc, 1, notes
    if engine in ("fastbp-cupy-fused", "fastbp-cupy", "fastbp-cupy-generic"):
        times, acc, net = run_fastbp("cupy", X, y, Xt, yt, batch, args.epochs, params, args.seed,
                                     fused=engine != "fastbp-cupy-generic")
        notes = []
        if engine == "fastbp-cupy-fused":  # check that the fused kernel is the one that ran
            be = net.backend
            X_dev = be.prepare_data(X[:batch])
            Y_dev = be.asarray(np.eye(10)[y[:batch]])
            if be.fused_config(net.layers, net.loss, X_dev, Y_dev, batch) is None:
                notes.append(f"batch {batch} is not covered by the fused kernel; the per-batch path ran")
        return times, acc, 1, notes
    if engine == "fastbp-numba":
        times, acc, _ = run_fastbp("numba", X, y, Xt, yt, batch, args.epochs, params, args.seed,
                                   threads=args.threads)
        return times, acc, 1, []
    if engine == "fastbp-cupy-ensemble":
        times, acc, notes = run_fastbp_ensemble(X, y, Xt, yt, batch, args.epochs, args.members, args.seed)
        return times, acc, args.members, notes
    if engine == "torch-func-ensemble":
        members = [initial_params(args.seed + k) for k in range(args.members)]
        times, acc, _ = run_torch_func_ensemble(X, y, Xt, yt, batch, args.epochs, members, args.seed)
        return times, acc, args.members, []
    if engine == "torch-cuda-hand":
        return (*run_torch_hand(X, y, Xt, yt, batch, args.epochs, params, args.seed)[:2], 1, [])
    if engine == "torch-cuda-graphs":
        return (*run_torch_graphs(X, y, Xt, yt, batch, args.epochs, params, args.seed)[:2], 1,
                [f"{GRAPH_STEPS} mini-batches per graph replay"])
    return (*run_torch_autograd(X, y, Xt, yt, batch, args.epochs, params, args.seed)[:2], 1, [])


# --- report ---------------------------------------------------------------------------------------
def versions():
    lines = [f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()} "
             f"{platform.processor() or platform.platform()}"]
    try:
        from fastbp.kernels.cupy_backend import CupyBackend

        if CupyBackend.is_available():
            info = CupyBackend.info()
            lines.append(f"GPU {info['device']} (compute capability {info['compute_capability']}), "
                         f"CuPy {info['cupy']}, CUDA runtime {info['cuda_runtime']}, driver {info['cuda_driver']}")
        else:
            lines.append("GPU: none visible to CuPy")
    except Exception as e:  # the report goes on without it
        lines.append(f"GPU: unknown ({type(e).__name__}: {e})")
    try:
        import torch

        lines.append(f"PyTorch {torch.__version__}" + (f", CUDA {torch.version.cuda}" if torch.version.cuda else ""))
    except ImportError:
        lines.append("PyTorch: not installed")
    try:
        import numba

        lines.append(f"Numba {numba.__version__}")
    except ImportError:
        pass
    return lines


def table(results, n):
    """The rows as text: results is a list of (engine, batch, seconds list, accuracy, networks, notes)."""
    fastbp = {(b, k): statistics.median(t) for e, b, t, _, k, _ in results
              if e in ("fastbp-cupy-fused", "fastbp-cupy", "fastbp-cupy-ensemble")}
    head = (f"{'engine':<21} {'nets':>4} {'batch':>6} {'s/epoch':>9} {'samples/s':>13} {'x fastbp-cupy':>14} "
            f"{'test acc':>9}")
    lines = [head, "-" * len(head)]
    for engine, batch, times, acc, nets, notes in results:
        med = statistics.median(times)
        ratio = f"{med / fastbp[batch, nets]:.1f}x" if (batch, nets) in fastbp else "-"
        lines.append(f"{engine:<21} {nets:>4} {batch:>6} {med:>9.4f} {nets * n / med:>13,.0f} {ratio:>14} "
                     f"{acc:>9.4f}")
        lines += [f"{'':<23}note: {note}" for note in notes]
    return lines


def summary(results, n, fused_accuracy):
    """The issues' targets, each met or missed by how much."""
    med = {(e, b): statistics.median(t) for e, b, t, _, _, _ in results}
    nets = {e: k for e, _, _, _, k, _ in results}
    out = []
    for (e, b), s in med.items():
        if e != "fastbp-cupy-fused":
            continue
        out.append(f"fused epoch at batch {b}: {s * 1e3:.1f} ms (target <= 30 ms: {'met' if s <= 0.030 else 'MISSED'}; "
                   f"one network over several SMs: <= 20 ms: {'met' if s <= 0.020 else 'MISSED'})")
        for torch_engine in ("torch-cuda-hand", "torch-cuda-graphs", "torch-cuda-autograd"):
            if (torch_engine, b) in med:
                r = med[(torch_engine, b)] / s
                out.append(f"  vs {torch_engine} at batch {b}: {r:.1f}x faster (target >= 20x: "
                           f"{'met' if r >= 20 else 'MISSED'})")
        for (e2, b2), s2 in med.items():
            if e2.startswith("fastbp-cupy-cluster") and b2 == b:
                out.append(f"  one network over {e2[len('fastbp-cupy-cluster'):]} SMs at batch {b}: {s2 * 1e3:.1f} ms = "
                           f"{s / s2:.2f}x the one-block kernel's speed (target <= 20 ms: "
                           f"{'met' if s2 <= 0.020 else 'MISSED'})")
        if ("fastbp-cupy-ensemble", b) in med:
            r = med[("fastbp-cupy-ensemble", b)] / s
            k = nets["fastbp-cupy-ensemble"]
            out.append(f"ensemble of {k} at batch {b}: {med[('fastbp-cupy-ensemble', b)] * 1e3:.1f} ms = {r:.2f}x one "
                       f"network's fused epoch (target <= 2x: {'met' if r <= 2 else 'MISSED'})")
    for (e, b), s in med.items():
        if e == "fastbp-cupy-ensemble" and ("torch-func-ensemble", b) in med:
            out.append(f"  vs torch-func-ensemble at batch {b}: {med[('torch-func-ensemble', b)] / s:.1f}x faster")
    cpu = [n / s for (e, b), s in med.items() if e == "fastbp-numba"]
    for (e, b), s in med.items():
        if e == "fastbp-cupy" and cpu:
            r = (n / s) / max(cpu)
            out.append(f"large batch {b}: {n / s:,.0f} samples/s = {r:.1f}x the best CPU figure "
                       f"({max(cpu):,.0f}; target >= 5x: {'met' if r >= 5 else 'MISSED'})")
    if fused_accuracy is not None:
        epochs, acc = fused_accuracy
        out.append(f"fused kernel accuracy after {epochs} epochs: {acc:.4f} (target >= 0.84 on "
                   f"Fashion-MNIST: {'met' if acc >= 0.84 else 'MISSED'})")
    return out


def main(argv=None):
    args = parse_args(argv)
    rows = plan(args)
    print(f"fastbp GPU benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"network {SIZES}, sigmoid, quadratic loss, float32, lr {LR}; data {args.data}"
          + (f" (first {args.n})" if args.n else "") + f"; {args.epochs} timed epochs per row after 1 warm-up")
    if args.dry_run:
        print("plan (engine, batch):")
        for engine, batch in rows:
            print(f"  {engine:<21} batch {batch}" + (f", {args.members} networks" if engine in ENSEMBLE_ENGINES
                                                      else ""))
        return 0
    for line in versions():
        print(line)
    X, y, Xt, yt, name = load_data(args.data, args.n, args.seed)
    print(f"data: {name}, {X.shape[0]} training and {Xt.shape[0]} test samples")
    params = initial_params(args.seed)
    results, failed = [], []
    for engine, batch in rows:
        try:
            times, acc, nets, notes = run_row(engine, batch, (X, y, Xt, yt), args, params)
        except Unavailable as e:
            print(f"error: engine {engine} cannot run here: {e}", file=sys.stderr)
            return 1
        except Exception as e:  # one failing row (a GPU's time is short): reported, the others still run
            traceback.print_exc()
            print(f"error: engine {engine} at batch {batch} failed: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append((engine, batch))
            continue
        results.append((engine, batch, times, acc, nets, notes))
        print(f"  {engine:<21} batch {batch:>6}: {statistics.median(times):.4f} s/epoch "
              f"(min {min(times):.4f}, max {max(times):.4f})" + "".join(f"; {note}" for note in notes), flush=True)
    fused_accuracy = None
    if "fastbp-cupy-fused" in args.engines and args.accuracy_epochs > 0 and args.small:
        _, acc, _ = run_fastbp("cupy", X, y, Xt, yt, args.small[0], args.accuracy_epochs - 1, params, args.seed)
        fused_accuracy = (args.accuracy_epochs, acc)
    print()
    for line in table(results, X.shape[0]) + [""] + summary(results, X.shape[0], fused_accuracy):
        print(line)
    for engine, batch in failed:
        print(f"FAILED: {engine} at batch {batch} (traceback above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
