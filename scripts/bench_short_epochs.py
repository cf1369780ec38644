"""Before/after time of short epochs, where the per-epoch costs (threads, buffers, dispatch) show:
two long-lived processes, one on this checkout and one on another (``--base``), each fit the book's
network (784-30-10 sigmoid, batch 10, float32) on the first N of the MNIST test digits, taking
turns, ``--rounds`` times per configuration; each turn reports the median epoch of one fit (of
enough epochs for about 200,000 samples). Prints per configuration both medians and the median of
the per-round ratios (the figure to quote on a noisy machine).

    python scripts/bench_short_epochs.py --base /tmp/old --configs 1:d:10,2:s:1000 --rounds 11

A configuration is threads:engine:samples, engine d (dense) or s (sparse first layer).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_interleaved import package_path  # noqa: E402

WORKER = r"""
import sys
import numpy as np
import fastbp as fb
sys.path.insert(0, sys.argv[3])
from bench_sparse import mnist_test
X, y, _, _ = mnist_test(sys.argv[2])
nets = {}
for config in sys.argv[1].split(","):
    threads, engine, n = config.split(":")
    be = fb.get_backend("numba", threads=int(threads), sparse=engine == "s")
    net = fb.Network.from_sizes([784, 30, 10], backend=be, seed=0)
    net.fit(X[:int(n)], y[:int(n)], epochs=2, batch_size=10, lr=3.0)  # compiled or loaded here
    nets[config] = (net, int(n))
print("ready", flush=True)
for line in sys.stdin:
    net, n = nets[line.strip()]
    h = net.fit(X[:n], y[:n], epochs=max(5, 20000 // n), batch_size=10, lr=3.0)
    print(float(np.median(h["seconds"])), flush=True)
"""


def check_config(config):
    parts = config.split(":")
    if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in ("d", "s") or not parts[2].isdigit() \
            or int(parts[0]) < 1 or not 1 <= int(parts[2]) <= 8000:
        raise SystemExit(f"--configs: expected threads:d|s:samples (samples 1..8000), got {config!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the other checkout (its fastbp/ and kernels/)")
    p.add_argument("--configs", default="1:d:10,2:d:10,1:s:10,2:s:10,1:d:1000,2:d:1000,1:s:1000,2:s:1000")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--mnist", default=os.environ.get("FASTBP_MNIST_DIR", "/work/shared/data/mnist"))
    args = p.parse_args(argv)
    configs = args.configs.split(",")
    for config in configs:
        check_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"new": package_path(os.path.join(HERE, ".."), tmp), "base": package_path(args.base, tmp)}
        procs = {}
        try:
            for tag, path in paths.items():
                procs[tag] = subprocess.Popen([sys.executable, "-c", WORKER, args.configs, os.path.abspath(args.mnist),
                                               HERE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                              env=dict(os.environ, PYTHONPATH=path), cwd=tmp)
                if procs[tag].stdout.readline().strip() != "ready":
                    raise SystemExit(f"the {tag} worker did not start")
            for config in configs:
                times = {"new": [], "base": []}
                for r in range(args.rounds):
                    for tag in (("new", "base") if r % 2 == 0 else ("base", "new")):
                        procs[tag].stdin.write(config + "\n")
                        procs[tag].stdin.flush()
                        times[tag].append(float(procs[tag].stdout.readline()))
                ratios = [a / b for a, b in zip(times["new"], times["base"])]
                print(f"{config}: base {statistics.median(times['base']) * 1e6:.0f} us, new "
                      f"{statistics.median(times['new']) * 1e6:.0f} us, median ratio new/base "
                      f"{statistics.median(ratios):.3f}", flush=True)
        finally:
            for proc in procs.values():
                proc.stdin.close()
                proc.wait()


if __name__ == "__main__":
    main()
