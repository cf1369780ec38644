"""A first compile on two cores (``kernels/compile_ahead.py``): a helper process compiles the
kernels a fused epoch calls while this process compiles the epoch. The results are those of the
NumPy reference whoever compiled what; a helper that never answers costs nothing but itself."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("numba")

import fastbp as fb  # noqa: E402
from fastbp.kernels import compile_ahead as CA  # noqa: E402

CHILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import fastbp as fb
    from fastbp.kernels import compile_ahead
    from numba.core import event
    compiled = []  # the functions this process compiled (not loaded)
    class Listener(event.Listener):
        def on_start(self, e):
            compiled.append(e.data["dispatcher"].py_func.__name__)
        def on_end(self, e):
            pass
    event.register("numba:compile", Listener())
    if os.environ.get("HELPER") == "hangs":
        compile_ahead.CHILD = "import time; time.sleep(600)"
        compile_ahead.PATIENCE = 600.0
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (40, 16)).astype(np.uint8)
    y = rng.integers(0, 3, 40)
    net = fb.Network.from_sizes([16, 6, 3], backend=fb.get_backend("numba", threads=THREADS), seed=0)
    t = time.perf_counter()
    h = net.fit(X, y, epochs=2, batch_size=5, lr=0.5, momentum=0.5)
    print(json.dumps({"W": [p["W"].tolist() for p in net.get_params()], "engine": h["engine"],
                      "jobs": compile_ahead.LAST, "seconds": time.perf_counter() - t, "compiled": compiled}))
""")


def reference():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (40, 16)).astype(np.uint8)
    y = rng.integers(0, 3, 40)
    net = fb.Network.from_sizes([16, 6, 3], backend="numpy", seed=0)
    net.fit(X, y, epochs=2, batch_size=5, lr=0.5, momentum=0.5)
    return [p["W"] for p in net.get_params()]


def run_child(cache, threads=1, **env):
    env = dict({k: v for k, v in os.environ.items() if k != CA.ENV}, NUMBA_CACHE_DIR=str(cache), **env)
    out = subprocess.run([sys.executable, "-c", CHILD.replace("THREADS", str(threads))], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_reference(r):
    for w, ref in zip(r["W"], reference()):
        np.testing.assert_allclose(np.array(w), ref, rtol=2e-4, atol=2e-5)


@pytest.mark.skipif(CA._cpus() < 2, reason="the helper runs only with two CPUs or more")
@pytest.mark.parametrize("threads, env", [(1, {}), (2, {}), (1, {"NUMBA_DEBUG_CACHE": "1"})])
def test_a_first_fit_shares_its_compile_with_a_helper_and_trains_as_the_reference(tmp_path, threads, env):
    """(NUMBA_DEBUG_CACHE: Numba prints lines to stdout, the helper's too, which are not its answers.)"""
    first = run_child(tmp_path / "cache", threads, **env)
    assert first["jobs"]["helper"], first["jobs"]  # the helper compiled some of the kernels
    again_here = [c for c in first["compiled"] for j in first["jobs"]["helper"] if c == j or c.startswith(j + "__")]
    assert again_here == [], first  # ...which this process loaded (a bound kernel: name__codes)
    assert_reference(first)
    again = run_child(tmp_path / "cache", threads)  # a new process loads both processes' kernels
    assert again["jobs"] == {} and again["W"] == first["W"] and again["engine"] == first["engine"]


@pytest.mark.skipif(CA._cpus() < 2, reason="the helper runs only with two CPUs or more")
def test_a_helper_that_never_answers_costs_no_waiting_and_this_process_compiles_everything(tmp_path):
    r = run_child(tmp_path / "cache", HELPER="hangs")
    assert r["jobs"]["helper"] == [] and r["jobs"]["here"], r["jobs"]
    assert r["seconds"] < 300  # not the helper's patience (600 s): it was never waited for
    assert_reference(r)


def test_no_helper_when_turned_off_or_when_the_kernel_is_compiled_already(monkeypatch):
    from fastbp.kernels import _nb_epoch as KF
    net = fb.Network.from_sizes([16, 6, 3], backend=fb.get_backend("numba"), seed=0)
    net.fit(np.random.default_rng(0).random((10, 16)), np.arange(10) % 3, epochs=1)
    for argtypes in KF.train_epoch.overloads:
        assert not CA.wanted(KF.train_epoch, argtypes)  # compiled (or loaded) here
    assert KF.train_epoch.overloads
    monkeypatch.setenv(CA.ENV, "0")
    assert not CA.wanted(KF.train_epoch, ("not", "compiled"))


def test_no_helper_from_a_frozen_program_or_an_executable_that_is_not_python(monkeypatch):
    from multiprocessing import spawn
    assert CA.interpreter() is not None  # (this test runs under a Python)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert CA.interpreter() is None  # its executable would run the program itself
    monkeypatch.delattr(sys, "frozen")
    monkeypatch.setattr(spawn, "get_executable", lambda: "/opt/host/bin/blender")
    assert CA.interpreter() is None
    from fastbp.kernels import _nb_epoch as KF
    assert not CA.wanted(KF.train_epoch, ("not", "compiled"))


def test_fastbp_info_says_whether_a_first_compile_has_a_helper(monkeypatch):
    monkeypatch.setenv(CA.ENV, "0")
    assert CA.status() == f"in this process only ({CA.ENV}=0)"
    monkeypatch.delenv(CA.ENV)
    monkeypatch.setattr(CA, "_cpus", lambda: 1)
    assert CA.status() == "in this process only (one CPU)"
    monkeypatch.setattr(CA, "_cpus", lambda: 4)
    assert CA.status().startswith("shared with a helper process (4 CPUs")
    assert fb.get_backend("numba").info()["first_compile"] == CA.status()
    out = subprocess.run([sys.executable, "-m", "fastbp", "info"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, **{CA.ENV: "0"}))
    assert f"numba first compile: in this process only ({CA.ENV}=0)" in out.stdout, out.stdout


def test_the_cpus_counted_are_no_more_than_the_cgroups_quota(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("100000 100000\n")  # one CPU's time (docker --cpus=1)
    assert CA._cpus(str(v2)) == 1
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert CA._cpus(str(v2)) == min(2, CA._cpus(str(tmp_path / "none")))
    (v2 / "cpu.max").write_text("max 100000\n")  # no quota
    assert CA._cpus(str(v2)) == CA._cpus(str(tmp_path / "none"))
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")  # half a CPU
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert CA._cpus(str(tmp_path / "v1")) == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert CA._cpus(str(tmp_path / "v1")) == CA._cpus(str(tmp_path / "none"))
