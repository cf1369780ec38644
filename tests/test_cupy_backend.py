"""The CuPy backend.

Without a GPU (CI): the one clear error without CuPy or without a GPU, "auto" falling back, the
CUDA template's rendering and argument checks, the rendered source compiled by nvcc (when nvcc is
installed), and the fused kernel's algorithm itself, run on the CPU: the rendered .cu compiled as
C++ with one POSIX thread per CUDA thread (barriers for __syncthreads and the warp shuffles) and
compared with the NumPy reference. With CuPy and a GPU (``-m gpu``): every method against the
NumPy reference, the fused epoch and the per-batch path against it, predict, the mixing errors.
"""
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import fastbp as fb
from fastbp import kernels
from fastbp.kernels import BackendUnavailable
from fastbp.kernels import cupy_backend as cb

from cuda_emulator import EMULATOR, HostCupy, as_cpp, check_guards  # tests/cuda_emulator.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALID = [(out, loss) for out in kernels.ACTIVATIONS for loss in kernels.LOSSES
         if kernels.pairs_with(out, loss)]
HIDDEN = [a for a in kernels.ACTIVATIONS if a != "softmax"]


# --- without CuPy, without a GPU --------------------------------------------------------------
@pytest.fixture
def no_cupy_loaded(monkeypatch):
    """The backend module as if cupy had never been imported by it."""
    monkeypatch.setattr(cb, "cp", None)
    return cb


def fake_cupy(count=None, error=None):
    """A stand-in cupy module whose getDeviceCount returns ``count`` or raises ``error``."""
    def get_device_count():
        if error is not None:
            raise error
        return count

    mod = types.ModuleType("cupy")
    mod.__version__ = "0.0-fake"
    mod.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return mod


def test_without_cupy_the_backend_fails_with_one_clear_message(monkeypatch, no_cupy_loaded):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    assert not cb.CupyBackend.is_available()
    assert not kernels.available("cupy")
    with pytest.raises(BackendUnavailable) as info:
        fb.Network.from_sizes([4, 3, 2], backend="cupy")
    msg = str(info.value)
    assert msg.startswith("backend 'cupy' is not available: CuPy cannot be imported")
    for hint in ("fastbp[gpu]", "cupy-cuda12x", "cupy-cuda13x"):
        assert hint in msg


@pytest.mark.parametrize("count,error,expected", [
    (None, RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected"), "finds no usable NVIDIA GPU"),
    (0, None, "finds no NVIDIA GPU"),
])
def test_without_a_gpu_the_backend_fails_with_one_clear_message(monkeypatch, no_cupy_loaded, count, error,
                                                                expected):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count, error))
    assert not cb.CupyBackend.is_available()
    with pytest.raises(BackendUnavailable) as info:
        kernels.get_backend("cupy")
    msg = str(info.value)
    assert expected in msg and "0.0-fake" in msg and "cupy-cuda13x" in msg
    if error is not None:
        assert "cudaErrorNoDevice" in msg
    assert cb.cp is None  # nothing half-initialised is left behind


def test_auto_falls_back_without_a_gpu_and_training_works(monkeypatch, no_cupy_loaded):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(error=RuntimeError("no driver")))
    name = kernels.resolve("auto")
    assert name in ("numba", "numpy")
    net = fb.Network.from_sizes([4, 3, 2], backend="auto", seed=0)
    assert net.backend.name == name
    X = np.random.default_rng(0).normal(size=(20, 4))
    history = net.fit(X, np.arange(20) % 2, epochs=2, batch_size=5, lr=0.5)
    assert np.isfinite(history.loss).all()
    assert isinstance(net.predict(X), np.ndarray)


def test_auto_prefers_cupy_when_a_gpu_is_reported(monkeypatch, no_cupy_loaded):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count=1))
    assert cb.CupyBackend.is_available()
    assert kernels.resolve("auto") == "cupy"


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"threads": 100}, ValueError, "threads: expected a multiple of 32"),
    ({"threads": 2048}, ValueError, "threads: expected at most 1024"),
    ({"threads": 0}, ValueError, "threads: expected a positive integer"),
    ({"dtype": "float16"}, ValueError, "dtype"),
])
def test_constructor_arguments_are_checked_before_looking_for_cupy(monkeypatch, no_cupy_loaded, kwargs, exc,
                                                                   match):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(exc, match=match):
        cb.CupyBackend(**kwargs)


# --- the CUDA template --------------------------------------------------------------------------
CONFIGS = [  # render_fused_epoch arguments: the book's network and a spread of the others
    dict(n_in=784, n_hidden=30, n_out=10, batch_size=10),
    dict(n_in=784, n_hidden=30, n_out=10, batch_size=32, dtype="float32", input_dtype="float32",
         hidden="relu", output="softmax", loss="cross_entropy"),
    dict(n_in=64, n_hidden=16, n_out=10, batch_size=1, dtype="float64", hidden="tanh", output="sigmoid",
         loss="binary_cross_entropy", threads=256),
    dict(n_in=2, n_hidden=3, n_out=1, batch_size=100, hidden="leaky_relu", output="identity", loss="mse",
         threads=128),
    dict(n_in=784, n_hidden=30, n_out=10, batch_size=10, cluster=4, threads=256),  # over 4 SMs: 8, 8, 8, 6 units
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_kernel_source_renders_with_the_sizes_and_types(config):
    src = cb.render_fused_epoch(**config)
    assert "${" not in src
    dt = config.get("dtype", "float32")
    xt = config.get("input_dtype", "uint8")
    assert f"typedef {'float' if dt == 'float32' else 'double'} T;" in src
    assert f"typedef {'unsigned char' if xt == 'uint8' else ('float' if xt == 'float32' else 'double')} XT;" in src
    for macro, value in (("N0", config["n_in"]), ("H", config["n_hidden"]), ("K", config["n_out"]),
                         ("BS", config["batch_size"]), ("SB", min(config["batch_size"], 10)),
                         ("NT", config.get("threads", 512)), ("CL", config.get("cluster", 1)),
                         ("HL", -(-config["n_hidden"] // config.get("cluster", 1)))):
        assert f"#define {macro} {value} " in src
    assert ("__cluster_dims__(CL, 1, 1)" in src.split("#else")[0]) and ("#if CL > 1" in src)
    codes = {"sigmoid": 0, "tanh": 1, "relu": 2, "leaky_relu": 3, "identity": 4, "softmax": 5}
    assert f"#define HID_ACT {codes[config.get('hidden', 'sigmoid')]}\n" in src
    assert f"#define OUT_ACT {codes[config.get('output', 'sigmoid')]}\n" in src
    cancel = (config.get("output", "sigmoid"), config.get("loss", "quadratic")) in (
        ("sigmoid", "binary_cross_entropy"), ("softmax", "cross_entropy"))
    assert f"#define CANCEL {int(cancel)} " in src


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_in=0), "n_in: expected a positive integer"),
    (dict(n_hidden=2.5), "n_hidden: expected a positive integer"),
    (dict(batch_size=cb.FUSED_MAX_BATCH + 1), f"batch_size: expected at most {cb.FUSED_MAX_BATCH}"),
    (dict(threads=48), "threads: expected a multiple of 32"),
    (dict(n_out=33), "n_out: expected at most 32"),
    (dict(dtype="float16"), "dtype: expected 'float32' or 'float64'"),
    (dict(input_dtype="int32"), "input_dtype: expected 'uint8'"),
    (dict(dtype="float64", input_dtype="float32"), "input_dtype"),
    (dict(hidden="softmax"), "hidden: expected one of"),
    (dict(output="swish"), "output: expected one of"),
    (dict(loss="hinge"), "loss: expected one of"),
    (dict(cluster=3), "cluster: expected one of 1, 2, 4, 8"),
    (dict(cluster=True), "cluster: expected one of"),
    (dict(cluster=4), "cluster: 4 blocks cannot share 3 hidden units"),
])
def test_render_checks_its_arguments(kwargs, match):
    args = dict(n_in=4, n_hidden=3, n_out=2, batch_size=10) | kwargs
    with pytest.raises(ValueError, match=match):
        cb.render_fused_epoch(**args)


def test_shared_memory_of_the_book_network():
    """784-30-10 float32 at batch 10 (the layout in fused_epoch.cu): hidden deltas 30 x 12, inputs
    12 x 784, weights 23520 + 300, biases 40, targets 10 x 10, three partial pre-activation blocks,
    z and a (10 x 30 each), output deltas 10 x 10, the staged next batch (10 x 10 targets, 10 x 784
    uint8 inputs), the output parts of two batches (2 x 10 x 10), b1's state (2 x 10) and two batches'
    int64 sample indices: above the default 48 KB, within an H100's 227 KB."""
    need = cb.fused_epoch_shared_bytes(784, 30, 10, 10, "float32")
    assert cb.fused_layout(784, 30, 10, 10)["P"] == 3
    assert need == 4 * (30 * 12 + 12 * 784 + 784 * 30 + 30 * 10 + 30 + 10 + 100 + 3 * 300 + 600 + 100 + 200 + 20
                        + 100) + 7840 + 160 + 64
    # over a cluster of 4 blocks, each holds 8 units' share: the weights and per-unit buffers shrink
    lay = cb.fused_layout(784, 30, 10, 10, cluster=4)
    quarter = cb.fused_epoch_shared_bytes(784, 30, 10, 10, "float32", cluster=4)
    assert quarter == 4 * (8 * 12 + 12 * 784 + 8 * 784 + 8 * 10 + 8 + 10 + 100 + lay["P"] * 80 + 160 + 100 + 200
                           + 20 + 100) + 7840 + 160 + 64
    assert need - quarter >= 4 * (30 - 8) * 784  # at least the 22 other units' first-layer weights
    assert 48 * 1024 < need <= 227 * 1024
    # float64 of the same net does not fit: the backend takes the per-batch path there
    assert cb.fused_epoch_shared_bytes(784, 30, 10, 10, "float64") > 227 * 1024


def test_the_math_preamble_is_the_math_section():
    pre = cb.math_preamble()
    for name in ("fb_activate", "fb_dact", "fb_loss_grad", "fb_loss_term"):
        assert name in pre
    assert "fused_epoch" not in pre and "${" not in pre


NVCC = shutil.which("nvcc")

PREAMBLE_CHECK = """
template <typename F> __global__ void all_math(F *out, const F *z, const F *y) {
    const int i = threadIdx.x;
    F a = fb_activate(z[i], i % 5, F(0.01));
    out[i] = fb_dact(z[i], a, i % 5, F(0.01)) + fb_loss_grad(a, y[i], i % 4, 10)
             + F(fb_loss_term(a, y[i], i % 4));
}
template __global__ void all_math<float>(float *, const float *, const float *);
template __global__ void all_math<double>(double *, const double *, const double *);
"""


@pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA compiler) is not installed")
def test_the_rendered_sources_compile_with_nvcc(tmp_path):
    """Catches CUDA syntax and type errors without a GPU: rendered configurations (float32 with uint8
    inputs, float64 with float inputs, the cluster split with cooperative groups and with its inline
    PTX fallback) and the math preamble the elementwise kernels use, compiled to PTX for the H100
    (sm_90), in parallel."""
    jobs = []
    cluster = cb.render_fused_epoch(**CONFIGS[4])
    assert "__has_include(<cooperative_groups.h>)" in cluster  # and without the header, inline PTX:
    sources = ([cb.render_fused_epoch(**CONFIGS[i]) for i in (0, 2)] + [cluster]
               + [cluster.replace("__has_include(<cooperative_groups.h>)", "0")] + [cb.math_preamble() + PREAMBLE_CHECK])
    for i, src in enumerate(sources):
        path = tmp_path / f"k{i}.cu"
        path.write_text(src)
        jobs.append(subprocess.Popen([NVCC, "--ptx", "-arch=sm_90", str(path), "-o", str(tmp_path / f"k{i}.ptx")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for i, job in enumerate(jobs):
        out, _ = job.communicate(timeout=300)
        assert job.returncode == 0, f"source {i} failed to compile:\n{out}"
        ptx = (tmp_path / f"k{i}.ptx").read_text()
        assert ".entry fused_epoch" in ptx or i == len(sources) - 1
        if i in (2, 3):  # the cluster split: a cluster barrier and remote shared-memory addresses
            assert ".reqnctapercluster 4, 1, 1" in ptx and "barrier.cluster" in ptx and "mapa" in ptx


# --- the fused kernel's algorithm, run on the CPU ------------------------------------------------
GXX = shutil.which("g++")

DRIVER = r"""
static int run(const char *dir) {  // inputs from dir, one epoch of every member, outputs to dir
    int n_samples, n, opt, n_hp, mean, members;
    double scale, slope_h, slope_o;
    FILE *f = fb_open(dir, "params.txt", "r");
    if (!f || std::fscanf(f, "%d %d %lf %d %d %d %lf %lf %d", &n_samples, &n, &scale, &opt, &n_hp,
                          &mean, &slope_h, &slope_o, &members) != 9) return 2;
    std::fclose(f);
    auto hp = load<double>(dir, "hp.bin", size_t(members) * n_hp);
    auto frozen = load<int>(dir, "frozen.bin", members);
    auto X = load<XT>(dir, "X.bin", size_t(n_samples) * N0);
    auto Y = load<T>(dir, "Y.bin", size_t(n_samples) * K);
    auto order = load<long long>(dir, "order.bin", size_t(members) * n);
    // every member's arrays, one after another in each file
    auto W0 = load<T>(dir, "W0.bin", members * N0 * H), b0 = load<T>(dir, "b0.bin", members * H);
    auto W1 = load<T>(dir, "W1.bin", members * H * K), b1 = load<T>(dir, "b1.bin", members * K);
    const int NS = 3;  // state slots, as many as any optimiser keeps (Adam: m, v and a gradient buffer)
    fb_buf<T> SW0(members * NS * N0 * H), Sb0(members * NS * H), SW1(members * NS * H * K), Sb1(members * NS * K);
    fb_buf<T *> table(size_t(members) * 8);
    for (int m = 0; m < members; m++) {
        T *member[] = {W0.data() + m * N0 * H, b0.data() + m * H, W1.data() + m * H * K, b1.data() + m * K,
                       SW0.data() + m * NS * N0 * H, Sb0.data() + m * NS * H, SW1.data() + m * NS * H * K,
                       Sb1.data() + m * NS * K};
        for (int i = 0; i < 8; i++) table[size_t(m) * 8 + i] = member[i];
    }
    fb_buf<double> parts(size_t(members) * NT);
    fb_buf<int> unfinite(members);
    fb_run_grid(members * CL, NT, CL, [&] {  // a cluster of CL blocks per member
        fused_epoch(X.data(), Y.data(), order.data(), n, scale, table.data(), opt, hp.data(), mean, frozen.data(),
                    slope_h, slope_o, parts.data(), unfinite.data());
    });
    for (int m = 0; m < members; m++)
        if (unfinite[m]) return 4;  // the cases train finite networks
    save(dir, "W0.out", W0); save(dir, "b0.out", b0); save(dir, "W1.out", W1); save(dir, "b1.out", b1);
    save(dir, "SW0.out", SW0); save(dir, "Sb0.out", Sb0); save(dir, "SW1.out", SW1); save(dir, "Sb1.out", Sb1);
    fb_buf<double> totals(members);
    for (int m = 0; m < members; m++)
        for (int t = 0; t < NT; t++) totals[m] += parts[size_t(m) * NT + t];
    save(dir, "loss.out", totals);
    return 0;
}
"""
CASE_MACROS = ("N0", "H", "CL", "HL", "K", "BS", "NT", "HID_ACT", "OUT_ACT", "LOSS", "CANCEL", "NW", "RW", "FULL", "PROF",
               "CLUSTER_DIMS", "MEMBER_ORDER", "MEMBER_HP", "MEMBER_FROZEN", "MEMBER_BYTES") + cb.LAYOUT_MACROS


def emulator_source(kernel_sources):
    """One C++ program holding every case: case i's kernel (C++ linkage, its own namespace and
    shared buffer) runs with ``emulator DIR i``."""
    parts = [EMULATOR]
    for i, src in enumerate(kernel_sources):
        parts.append(f"namespace case{i} {{\n{as_cpp(src)}\n{DRIVER}\n}}\n")
        parts.append("".join(f"#undef {m}\n" for m in CASE_MACROS))
    cases = "".join(f"        case {i}: return case{i}::run(argv[1]);\n" for i in range(len(kernel_sources)))
    parts.append(f"int main(int argc, char **argv) {{\n    switch (std::atoi(argv[2])) {{\n{cases}"
                 f"    }}\n    return 3;\n}}\n")
    return "".join(parts)


# (name, render args, training options): every branch of the kernel at least once — cancelling and
# not, softmax both ways, momentum with weight decay, frozen parameters, both reductions, uint8
# and float inputs, more samples than one register block (batch > 16), a short last batch, and
# more hidden units than warps (two warps here); the layout branches are checked below.
EMULATED = [
    ("sigmoid-quadratic", dict(n_in=45, n_hidden=5, n_out=3, batch_size=7, dtype="float64"),
     dict(n=30, lr=0.5)),
    ("tanh-softmax-ce-momentum", dict(n_in=40, n_hidden=9, n_out=4, batch_size=20, dtype="float64",
                                      input_dtype="float64", hidden="tanh", output="softmax",
                                      loss="cross_entropy"),
     dict(n=45, lr=0.2, momentum=0.9, weight_decay=0.01)),
    ("leaky-softmax-mse-frozen-sum", dict(n_in=201, n_hidden=12, n_out=3, batch_size=3, dtype="float64",
                                          hidden="leaky_relu", output="softmax", loss="mse"),
     dict(n=8, lr=0.3, reduction="sum", frozen=((("b",), ("W",))), slope=0.2)),
    ("relu-sigmoid-bce-float32", dict(n_in=50, n_hidden=6, n_out=2, batch_size=10, dtype="float32",
                                      hidden="relu", output="sigmoid", loss="binary_cross_entropy"),
     dict(n=25, lr=1.0)),
    # uint8 inputs gathered four to a word, several update tiles per thread, a part-filled unit group
    ("sigmoid-quadratic-words-float32", dict(n_in=400, n_hidden=13, n_out=10, batch_size=10, dtype="float32",
                                             threads=256),
     dict(n=37, lr=3.0)),
    # the other optimisers: Adam (with weight decay, over three epochs' worth of steps in one), Nesterov
    ("tanh-sigmoid-adam", dict(n_in=30, n_hidden=7, n_out=3, batch_size=4, dtype="float64", hidden="tanh"),
     dict(n=50, lr=0.01, optimizer="adam", weight_decay=0.01)),
    ("tanh-exp-poisson", dict(n_in=16, n_hidden=6, n_out=2, batch_size=5, dtype="float64", hidden="tanh",
                              output="exp", loss="poisson"),
     dict(n=20, lr=0.05)),
    ("relu-softmax-ce-nesterov-float32", dict(n_in=24, n_hidden=10, n_out=4, batch_size=6, dtype="float32",
                                              input_dtype="float32", hidden="relu", output="softmax",
                                              loss="cross_entropy"),
     dict(n=40, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.001)),
    # an ensemble in one launch: four members, each its own seed, order, learning rate, frozen parameters
    ("ensemble-sigmoid-momentum", dict(n_in=36, n_hidden=7, n_out=3, batch_size=5, dtype="float64"),
     dict(n=23, lr=0.5, momentum=0.9, members=4,
          member_frozen=[((), ()), (("b",), ()), ((), ("W",)), ((), ())])),
    ("ensemble-tanh-adam-float32", dict(n_in=40, n_hidden=9, n_out=4, batch_size=8, dtype="float32",
                                        hidden="tanh", output="softmax", loss="cross_entropy"),
     dict(n=30, lr=0.01, optimizer="adam", members=3)),
    # one network over a cluster of blocks (the hidden units split, the output parts exchanged):
    # 7 units over 4 blocks (2, 2, 2, 1), Adam (b1's state copied per block), a short last batch
    ("cluster4-sigmoid-adam", dict(n_in=44, n_hidden=7, n_out=3, batch_size=6, dtype="float64", cluster=4),
     dict(n=27, lr=0.02, optimizer="adam", weight_decay=0.01)),
    # two blocks per member, three members, momentum, softmax, frozen b1 in one member, float32 words
    ("cluster2-ensemble-momentum-float32", dict(n_in=64, n_hidden=10, n_out=4, batch_size=10, dtype="float32",
                                                hidden="relu", output="softmax", loss="cross_entropy", cluster=2),
     dict(n=35, lr=0.1, momentum=0.9, members=3, member_frozen=[((), ()), ((), ("b",)), ((), ())])),
    ("cluster8-tanh-mse-sum", dict(n_in=30, n_hidden=15, n_out=2, batch_size=3, dtype="float64", hidden="tanh",
                                   output="identity", loss="mse", cluster=8),
     dict(n=11, lr=0.01, reduction="sum")),
]


def test_the_emulated_cases_cover_every_layout_branch():
    layouts = [(cb.fused_layout(c["n_in"], c["n_hidden"], c["n_out"], c["batch_size"], c.get("threads", 64),
                                c.get("input_dtype", "uint8"), c["dtype"]), c) for _, c, _ in EMULATED]
    assert {lay["PREF"] for lay, _ in layouts} == {0, 1}  # staged asynchronous copies, and the direct gather
    assert {lay["LPR"] for lay, _ in layouts} == {1, 4}   # one input per load, and four uint8 to a word
    assert {lay["CF"] for lay, _ in layouts} == {1, 2}    # one or two sums per lane after the exchanges
    assert any(lay["P"] > 1 for lay, _ in layouts)        # partial pre-activations added in phase 3
    assert any(lay["JG"] * lay["NG"] > c.get("threads", 64) for lay, c in layouts)  # several tiles per thread
    assert any(c["n_hidden"] % lay["UPW"] for lay, c in layouts)  # a part-filled forward unit group
    assert any(c["n_hidden"] > lay["TJ"] for lay, c in layouts)   # more than one update unit group
    assert any(c["batch_size"] > lay["SB"] for lay, c in layouts)  # more than one forward sample block
    assert any(c["batch_size"] % 4 for _, c in layouts)   # zero-padded deltas in the update
    assert {lay["TI"] for lay, _ in layouts} == {1, 4} and {lay["VX"] for lay, _ in layouts} == {1, 2}


def _emulate_case(tmp_path, name, config, train):
    """Write one case's inputs (every member's) and run the NumPy reference, member by member;
    returns what the check needs. Member k of an ensemble case: seed 3 + k, its own sample order,
    learning rate ``lr * (1 + k / 4)``, and its own frozen parameters (``member_frozen``)."""
    rng = np.random.default_rng(len(name))
    n, n_in, n_out = train["n"], config["n_in"], config["n_out"]
    members = train.get("members", 1)
    dt = np.dtype(config["dtype"])
    xt = np.dtype(config.get("input_dtype", "uint8"))
    X = rng.integers(0, 256, (n, n_in)).astype(np.uint8) if xt == np.uint8 else rng.normal(size=(n, n_in)).astype(xt)
    labels = rng.integers(0, n_out, n)
    Y = np.eye(n_out, dtype=dt)[labels]
    slope = train.get("slope", 0.01)
    nets, histories, orders, hps, bits = [], [], [], [], []
    for k in range(members):
        frozen = train.get("member_frozen", [train.get("frozen", ((), ()))] * members)[k]
        layers = [fb.Dense(n_in, config["n_hidden"], (config.get("hidden", "sigmoid"), slope), frozen=frozen[0]),
                  fb.Dense(config["n_hidden"], n_out, (config.get("output", "sigmoid"), slope), frozen=frozen[1])]
        net = fb.Network(layers, loss=config.get("loss", "quadratic"), backend="numpy", dtype=dt.name, seed=3 + k)
        lr = train["lr"] * (1 + k / 4)
        if train.get("optimizer") == "adam":
            opt = fb.Adam(lr, weight_decay=train.get("weight_decay", 0.0))
        else:
            opt = fb.SGD(lr, train.get("momentum", 0.0), train.get("weight_decay", 0.0),
                         train.get("reduction", "mean"), nesterov=train.get("nesterov", False))
        order = rng.permutation(n)
        nets.append((net, net.get_params()))
        orders.append(order)
        hps.append(opt.hyperparameters())
        bits.append(("W" in frozen[0]) * 1 | ("b" in frozen[0]) * 2 | ("W" in frozen[1]) * 4 | ("b" in frozen[1]) * 8)
        # the reference: the NumPy backend over the same order (fit without shuffling over X[order])
        histories.append(net.fit(X[order], labels[order], epochs=1, batch_size=config["batch_size"], optimizer=opt,
                                 shuffle=False))
    folder = tmp_path / name
    folder.mkdir()
    np.array(hps, dtype=np.float64).tofile(folder / "hp.bin")
    np.array(bits, dtype=np.int32).tofile(folder / "frozen.bin")
    X.tofile(folder / "X.bin")
    Y.tofile(folder / "Y.bin")
    np.array(orders, dtype=np.int64).tofile(folder / "order.bin")
    for i in range(2):  # every member's initial parameters, one after another
        for p in ("W", "b"):
            np.concatenate([before[i][p].astype(dt).ravel() for _, before in nets]).tofile(folder / f"{p}{i}.bin")
    scale = 1 / 255 if xt == np.uint8 else 1.0
    (folder / "params.txt").write_text(
        f"{n} {n} {scale!r} {opt.code} {len(hps[0])} {int(opt.reduction == 'mean')} {slope!r} {slope!r} "
        f"{members}\n")
    return dict(folder=folder, nets=[net for net, _ in nets], histories=histories, n=n, dt=dt,
                source=cb.render_fused_epoch(**({"threads": 64} | config)))


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_the_fused_kernel_run_on_cpu_threads_matches_the_numpy_reference(tmp_path):
    """Every case's kernel run on CPU threads (a block's threads as POSIX threads, the launch's blocks
    one after another) against the NumPy reference: parameters, optimiser state and loss of each
    member; the ensemble case checks that block k trains member k and no other."""
    cases = [(name, train, _emulate_case(tmp_path, name, config, train)) for name, config, train in EMULATED]
    (tmp_path / "emulator.cpp").write_text(emulator_source([case["source"] for _, _, case in cases]))
    build = subprocess.run([GXX, "-std=c++20", "-O0", "-pthread", "-w", str(tmp_path / "emulator.cpp"), "-o",
                            str(tmp_path / "emulator")], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"the emulator failed to compile:\n{build.stderr}"
    for c, (name, train, case) in enumerate(cases):
        folder, dt = case["folder"], case["dt"]
        run = subprocess.run([str(tmp_path / "emulator"), str(folder), str(c)], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, f"{name}: {run.stderr}"
        tol = dict(rtol=1e-9, atol=1e-12) if dt == np.float64 else dict(rtol=2e-5, atol=2e-6)
        members = len(case["nets"])
        losses = np.fromfile(folder / "loss.out")
        assert losses.shape == (members,)
        for k, (net, history) in enumerate(zip(case["nets"], case["histories"])):
            ref = net.get_params()
            for i, layer in enumerate(net.layers):
                got_W = np.fromfile(folder / f"W{i}.out", dtype=dt).reshape((members,) + ref[i]["W"].shape)[k]
                got_b = np.fromfile(folder / f"b{i}.out", dtype=dt).reshape(members, -1)[k]
                np.testing.assert_allclose(got_W, ref[i]["W"], **tol, err_msg=f"{name} member {k}: W{i}")
                np.testing.assert_allclose(got_b, ref[i]["b"], **tol, err_msg=f"{name} member {k}: b{i}")
                for p, state in net.optimizer.layer_state(layer).items():  # the optimiser's state too
                    got = np.fromfile(folder / f"S{p}{i}.out", dtype=dt).reshape((members, 3) + state.shape[1:])[k]
                    np.testing.assert_allclose(got[:state.shape[0]], state, **tol,
                                               err_msg=f"{name} member {k}: state of {p}{i}")
            # the momentum case has velocities to compare
            assert train.get("momentum", 0) == 0 or net.optimizer.layer_state(net.layers[0])
            assert losses[k] == pytest.approx(history["loss"][0] * case["n"], rel=1e-9 if dt == np.float64 else 1e-5)
    assert any(len(case["nets"]) > 2 for _, _, case in cases)  # an ensemble case ran


# --- the backend's Python side, its fused kernel run on CPU threads (tests/cuda_emulator.py) --------
@pytest.fixture
def host_cupy(monkeypatch):
    """The cupy backend on the host emulator: arrays in host memory, the fused kernel's real source
    compiled as C++ and launched on CPU threads. Backends are made directly (64 threads a block)."""
    if GXX is None:
        pytest.skip("g++ is not installed")
    mod = HostCupy()
    monkeypatch.setitem(sys.modules, "cupy", mod)
    monkeypatch.setattr(cb, "cp", mod)
    check_guards()  # (forgets arrays of earlier tests)
    yield mod
    check_guards()  # no kernel wrote past the end of an array


def host_backend(dtype="float64"):
    return cb.CupyBackend(dtype, threads=64)


def lone_networks(sizes, seeds, backend, **kw):
    return [fb.Network.from_sizes(sizes, seed=k, backend=backend, **kw) for k in seeds]


def assert_same_params(got, expected, **tol):
    for p, q in zip(got.get_params(), expected.get_params()):
        np.testing.assert_allclose(p["W"], q["W"], **tol)
        np.testing.assert_allclose(p["b"], q["b"], **tol)


def test_host_emulated_fused_fit_of_one_network_matches_numpy(host_cupy):
    X, y = small_problem(n=50)
    gpu, cpu = (fb.Network.from_sizes([20, 6, 3], seed=4, backend=be, activation="tanh")
                for be in (host_backend(), kernels.get_backend("numpy", "float64")))
    h_gpu = gpu.fit(X, y, epochs=2, batch_size=7, optimizer=fb.Adam(0.01))
    h_cpu = cpu.fit(X, y, epochs=2, batch_size=7, optimizer=fb.Adam(0.01))
    assert h_gpu["engine"] == "cupy-fused"
    assert [k.launches for k in host_cupy.kernels] == [[((1,), (64,))] * 2]  # one launch an epoch, one block
    assert gpu.optimizer.t == cpu.optimizer.t == 16
    np.testing.assert_allclose(h_gpu.loss, h_cpu.loss, rtol=1e-9)
    assert_same_params(gpu, cpu, rtol=1e-9, atol=1e-12)


def test_host_emulated_ensemble_trains_every_member_in_one_launch_as_the_lone_networks(host_cupy):
    """The ensemble contract on the cupy backend: member k (seed k, its own learning rate, momentum)
    ends as the lone network with seed k trained alone on NumPy, all members one launch per epoch,
    a block each; the optimiser's state carries over to a second fit."""
    X, y = small_problem(n=40)
    seeds, rates = [0, 1, 2, 3], [0.1, 0.3, 0.5, 0.7]
    ens = fb.Ensemble(lone_networks([20, 5, 3], seeds, host_backend()))
    h = ens.fit(X, y, epochs=2, batch_size=10, lr=rates, momentum=0.9)
    h2 = ens.fit(X, y, epochs=1, batch_size=10, lr=rates, momentum=0.9)
    assert h["engine"] == h2["engine"] == "cupy-fused-members"
    assert [launch for k in host_cupy.kernels for launch in k.launches] == [((4,), (64,))] * 3
    for k, (net, lr) in enumerate(zip(lone_networks([20, 5, 3], seeds, kernels.get_backend("numpy", "float64")),
                                      rates)):
        first = net.fit(X, y, epochs=2, batch_size=10, lr=lr, momentum=0.9)
        second = net.fit(X, y, epochs=1, batch_size=10, lr=lr, momentum=0.9)
        np.testing.assert_allclose([e[k] for e in h["loss"]], first["loss"], rtol=1e-9)
        np.testing.assert_allclose([e[k] for e in h2["loss"]], second["loss"], rtol=1e-9)
        assert_same_params(ens[k], net, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cluster,sizes,expected", [(2, [20, 5, 3], 2), (4, [20, 7, 3], 4), (8, [20, 3, 3], 2)])
def test_host_emulated_cluster_split_of_each_network_matches_numpy(host_cupy, cluster, sizes, expected):
    """CupyBackend(cluster=N): each network over N blocks (its hidden units split, the output parts
    exchanged), an ensemble's members a cluster each; too few hidden units for N blocks take the
    largest size that gives every block one (3 units: 2 blocks of 2 and 1)."""
    X, y = small_problem(n=33)
    be = cb.CupyBackend("float64", threads=64, cluster=cluster)
    ens = fb.Ensemble(lone_networks(sizes, [0, 1], be, activation="tanh"))
    h = ens.fit(X, y, epochs=2, batch_size=6, lr=[0.2, 0.4], momentum=0.9)
    assert h["engine"] == "cupy-fused-members"
    assert [launch for k in host_cupy.kernels for launch in k.launches] == [((2 * expected,), (64,))] * 2
    assert f"#define CL {expected} " in host_cupy.kernels[0].code
    for k, net in enumerate(lone_networks(sizes, [0, 1], kernels.get_backend("numpy", "float64"), activation="tanh")):
        ref = net.fit(X, y, epochs=2, batch_size=6, lr=[0.2, 0.4][k], momentum=0.9)
        np.testing.assert_allclose([e[k] for e in h["loss"]], ref["loss"], rtol=1e-9)
        assert_same_params(ens[k], net, rtol=1e-9, atol=1e-12)


def test_the_cluster_size_is_checked():
    for bad in (3, 0, 16, "4", True):
        with pytest.raises(ValueError, match="cluster: expected one of 1, 2, 4, 8"):
            cb.CupyBackend.__init__(object.__new__(cb.CupyBackend), "float32", cluster=bad)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings, expected
def test_host_emulated_ensemble_a_diverging_member_is_put_back_and_left_out_of_the_launch(host_cupy):
    X, y = small_problem(n=40)
    X = X.astype(np.float32)  # unscaled 0..255: lr 1e9 overflows float32 in the first epoch
    kw = dict(activation="tanh", output_activation="identity")
    ens = fb.Ensemble(lone_networks([20, 5, 3], [0, 1, 2], host_backend("float32"), **kw))
    ref = fb.Ensemble(lone_networks([20, 5, 3], [0, 1, 2], kernels.get_backend("numpy", "float32"), **kw))
    start = ens[1].get_params()
    h = ens.fit(X, y, epochs=3, lr=[1e-5, 1e9, 1e-5], momentum=0.5)
    h_ref = ref.fit(X, y, epochs=3, lr=[1e-5, 1e9, 1e-5], momentum=0.5)
    assert h["engine"] == "cupy-fused-members" and h["diverged"] == h_ref["diverged"] == {1: 1}
    assert [launch[0] for k in host_cupy.kernels for launch in k.launches] == [(3,), (2,), (2,)]
    for p, q in zip(start, ens[1].get_params()):  # put back to its weights before that epoch
        np.testing.assert_array_equal(p["W"], q["W"])
        np.testing.assert_array_equal(p["b"], q["b"])
    for k in (0, 2):  # the others trained on, as the reference's
        assert_same_params(ens[k], ref[k], rtol=1e-4, atol=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings, expected
def test_host_emulated_a_last_step_that_overflows_is_caught_by_the_kernel_itself(host_cupy, monkeypatch):
    """One mini-batch per epoch at lr 1e39 (inf in float32): the loss (before the step) is finite,
    the weights and velocities after it are not; the kernel marks the member (the plan checks
    nothing itself: LayerPlan.finite is never asked), it is put back, as on NumPy."""
    from fastbp.kernels import plan as plan_module

    monkeypatch.setattr(plan_module.LayerPlan, "finite", lambda self: np.ones(self.n_members, bool))  # no host check
    X, y = small_problem(n=10)
    runs = {}
    for name, be in (("gpu", host_backend("float32")), ("cpu", kernels.get_backend("numpy", "float32"))):
        ens = fb.Ensemble(lone_networks([20, 5, 3], [0, 1], be))
        start = [m.get_params() for m in ens]
        runs[name] = (ens, start, ens.fit(X, y, epochs=2, batch_size=10, lr=[0.5, 1e39], momentum=0.9))
    ens, start, h = runs["gpu"]
    assert h["engine"] == "cupy-fused-members" and h["diverged"] == runs["cpu"][2]["diverged"] == {1: 1}
    assert np.isfinite(h["loss"][0][0]) and np.isnan(h["loss"][0][1])  # the member's loss marked NaN
    for p, q in zip(start[1], ens[1].get_params()):
        np.testing.assert_array_equal(p["W"], q["W"])
    assert_same_params(ens[0], runs["cpu"][0][0], rtol=2e-5, atol=2e-6)


def test_host_emulated_members_whose_frozen_parameters_differ_share_the_launch(host_cupy):
    """A frozen parameter keeps no optimiser state (its state pointer is the parameter's own): the
    kernel must neither read nor write state there (the arrays' poison shows both)."""
    X, y = small_problem(n=30)
    nets = []
    for be in (host_backend("float32"), kernels.get_backend("numpy", "float32")):
        nets.append([fb.Network([fb.Dense(20, 6, "sigmoid", frozen=f0), fb.Dense(6, 3, "sigmoid", frozen=f1)],
                                backend=be, seed=k)
                     for k, (f0, f1) in enumerate([((), ()), (("W",), ()), (("b",), ()), ((), ("b",)), ((), ("W",))])])
    ens = fb.Ensemble(nets[0])
    h = ens.fit(X, y, epochs=1, batch_size=10, optimizer=fb.Adam(0.01))
    assert h["engine"] == "cupy-fused-members"
    for k, net in enumerate(nets[1]):
        net.fit(X, y, epochs=1, batch_size=10, optimizer=fb.Adam(0.01))
        assert_same_params(ens[k], net, rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(ens[1].get_params()[0]["W"], fb.Network(
        [fb.Dense(20, 6, "sigmoid"), fb.Dense(6, 3, "sigmoid")], backend="numpy", seed=1).get_params()[0]["W"])


# --- the benchmark script's CPU side ----------------------------------------------------------------
def test_bench_gpu_dry_run_prints_the_plan():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_gpu.py"), "--dry-run",
                          "--engines", "fastbp-cupy-fused,torch-cuda-autograd,fastbp-numba"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for word in ("fastbp-cupy-fused", "torch-cuda-autograd", "fastbp-numba", "batch"):
        assert word in run.stdout


def bench_gpu_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", os.path.join(ROOT, "scripts", "bench_gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_torch_peers_compute_the_hand_written_updates(monkeypatch):
    """The PyTorch peers, run on the CPU (no graphs there): the graphed one network (chunks of
    GRAPH_STEPS batches, a partial last chunk) and each member of the vmapped ensemble make the
    same updates as the plain hand-written loop with that member's seed."""
    pytest.importorskip("torch", reason="PyTorch is not installed")
    bg = bench_gpu_module()
    monkeypatch.setattr(bg, "GRAPH_STEPS", 4)  # chunks of 40 rows: 6 whole chunks and 10 rows left
    X, y = small_problem(n=250, n_in=784, n_out=10)
    params = [bg.initial_params(k) for k in range(3)]
    plain = [bg.run_torch_hand(X, y, X[:50], y[:50], 10, 1, params[k], 7 + k, device="cpu") for k in range(3)]
    graphs = bg.run_torch_graphs(X, y, X[:50], y[:50], 10, 1, params[0], 7, device="cpu")
    times, acc, stacked = bg.run_torch_func_ensemble(X, y, X[:50], y[:50], 10, 1, params, 7, device="cpu")
    assert len(graphs[0]) == len(times) == 1 and acc == plain[0][1]
    for got, want in zip(graphs[2], plain[0][2]):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    for k in range(3):
        for got, want in zip(stacked, plain[k][2]):
            np.testing.assert_allclose(got[k].numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(stacked[0][0].numpy(), stacked[0][1].numpy())  # the members differ


def test_bench_gpu_table_and_summary_compare_like_with_like():
    bg = bench_gpu_module()
    results = [("fastbp-cupy-fused", 10, [0.05, 0.05, 0.06], 0.85, 1, []),
               ("torch-cuda-graphs", 10, [0.2, 0.2, 0.2], 0.85, 1, ["100 mini-batches per graph replay"]),
               ("fastbp-cupy-ensemble", 10, [0.09, 0.09, 0.1], 0.84, 132, ["engine cupy-fused-members"]),
               ("torch-func-ensemble", 10, [0.9, 0.9, 0.9], 0.84, 132, []),
               ("fastbp-cupy-cluster4", 10, [0.025, 0.025, 0.03], 0.85, 1, [])]
    text = "\n".join(bg.table(results, 60000) + bg.summary(results, 60000, None))
    assert "4.0x" in text.split("torch-cuda-graphs")[1].split("\n")[0]  # vs the one fused network
    assert "10.0x" in text.split("torch-func-ensemble")[1].split("\n")[0]  # vs the fastbp ensemble, not 1 net
    assert f"{132 * 60000 / 0.09:,.0f}" in text  # samples/s counts every member's samples
    assert "ensemble of 132 at batch 10: 90.0 ms = 1.80x one network's fused epoch (target <= 2x: met)" in text
    assert "vs torch-func-ensemble at batch 10: 10.0x faster" in text
    assert "note: engine cupy-fused-members" in text
    assert "0.5x" in text.split("fastbp-cupy-cluster4")[1].split("\n")[0]  # against the one-block kernel
    assert ("one network over 4 SMs at batch 10: 25.0 ms = 2.00x the one-block kernel's speed (target <= 20 ms: "
            "MISSED)") in text


def test_bench_gpu_a_failing_row_is_reported_and_the_others_still_run(monkeypatch, capsys):
    bg = bench_gpu_module()
    calls = []

    def row(engine, batch, data, args, params):
        calls.append(batch)
        if batch == 10:
            raise RuntimeError("boom")
        return [0.1, 0.1], 0.5, 1, []

    monkeypatch.setattr(bg, "run_row", row)
    rc = bg.main(["--data", "synthetic", "--n", "100", "--engines", "fastbp-numba", "--small", "10", "--large",
                  "1000", "--epochs", "1", "--accuracy-epochs", "0"])
    out = capsys.readouterr()
    assert rc == 1 and calls == [10, 1000]
    assert "fastbp-numba at batch 10 failed: RuntimeError: boom" in out.err and "RuntimeError: boom" in out.err
    assert "FAILED: fastbp-numba at batch 10" in out.out and "0.1000" in out.out  # the other row's result


def test_bench_gpu_rejects_a_bad_member_count():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_gpu.py"), "--dry-run", "--members", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--members" in run.stderr


def test_bench_py_gpu_flag_prints_the_gpu_plan():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--gpu", "--dry-run",
                          "--engines", "fastbp-cupy-fused,torch-cuda-hand"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "fastbp-cupy-fused" in run.stdout and "torch-cuda-hand" in run.stdout


BENCH_ENSEMBLE = ["ensemble-f32-t1", "ensemble-f32-t2", "sequential-f32-t1", "torch-func-ensemble", "torch-sequential"]


def bench_py(*args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_bench_py_ensemble_rows_only_with_the_flag_or_when_named():
    default = bench_py("--dry-run")
    assert default.returncode == 0, default.stderr
    plan = next(line for line in default.stdout.splitlines() if line.startswith("# would run:"))
    assert "numba-f32-t1" in plan and not any(e in plan for e in BENCH_ENSEMBLE)
    flagged = bench_py("--dry-run", "--ensemble", "16")
    assert flagged.returncode == 0, flagged.stderr
    assert "ensembles of 16 members" in flagged.stdout
    for e in BENCH_ENSEMBLE:  # run, or named as not installed (torch)
        assert e in flagged.stdout
    named = bench_py("--dry-run", "--engines", "sequential-f32-t1")  # named without --ensemble: 16
    assert named.returncode == 0 and "ensembles of 16 members" in named.stdout
    assert bench_py("--dry-run", "--ensemble", "0").returncode == 2


def test_bench_py_ensemble_tiny_run(tmp_path):
    """The ensemble rows of a tiny run (digits, 1 epoch, 2 members): in the table and the JSON with
    finite numbers; torch's rows only where torch is installed, else named as skipped."""
    import importlib.util
    import json

    out = tmp_path / "bench.json"
    run = bench_py("--dataset", "digits", "--epochs", "1", "--ensemble", "2", "--engines", "ensemble",
                   "--json", str(out), timeout=900)
    assert run.returncode == 0, run.stderr
    assert "failed" not in run.stdout, run.stdout
    has_torch = importlib.util.find_spec("torch") is not None
    expected = BENCH_ENSEMBLE if has_torch else BENCH_ENSEMBLE[:3]
    if not has_torch:
        assert "skipped, not installed: torch-func-ensemble, torch-sequential" in run.stdout
    results = {r["engine"]: r for r in json.loads(out.read_text())["results"]}
    assert sorted(results) == sorted(expected)
    for engine, r in results.items():
        assert r["members"] == 2 and len(r["accuracies"]) == 2, engine
        assert len(r["seconds"]) == 1 and np.isfinite(r["seconds"]).all() and r["seconds"][0] > 0, engine
        assert 0 <= min(r["accuracies"]) <= r["accuracy"] <= max(r["accuracies"]) <= 1, engine
        assert r["n"] > 0 and np.isfinite(r["accuracy"]), engine
    rows = [line for line in run.stdout.splitlines() if "2 members; x = vs sequential-f32-t1" in line]
    assert len(rows) == len(expected), run.stdout
    for row in rows:  # s/epoch, samples/s, ratio, accuracy: finite numbers
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(np.isfinite(float(c.replace(",", ""))) for c in cells[1:5]), row
    ratio = {r: float(c.strip("|").split("|")[3]) for r, c in zip(results, rows)}
    assert ratio["sequential-f32-t1"] == 1.0
    # the fastbp rows train the same networks (member k from seed k): the same accuracies
    for engine in ("ensemble-f32-t1", "ensemble-f32-t2"):
        assert results[engine]["accuracies"] == pytest.approx(results["sequential-f32-t1"]["accuracies"], abs=0.02)


def test_bench_gpu_rejects_an_unknown_engine():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_gpu.py"), "--dry-run",
                          "--engines", "fastbp-tpu"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "fastbp-tpu" in run.stderr


# --- on a GPU -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cupy():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    if not cb.CupyBackend.is_available():
        pytest.skip("no NVIDIA GPU visible to CuPy")
    return cupy


def backends(dtype):
    return kernels.get_backend("numpy", dtype), kernels.get_backend("cupy", dtype)


def assert_held_to_float64(gpu, cpu, exact, slack, what=()):
    """The GPU network's float32 weights are at most 4x as far from the float64 reference
    network's as NumPy's own float32 ones are, plus ``slack`` (rounding differences grow over
    many steps, so the GPU is held to the reference, not to NumPy's float32 rounding)."""
    for p_gpu, p_cpu, p_exact in zip(gpu.get_params(), cpu.get_params(), exact.get_params()):
        for name in ("W", "b"):
            err_gpu = np.abs(p_gpu[name] - p_exact[name]).max()
            err_cpu = np.abs(p_cpu[name] - p_exact[name]).max()
            assert err_gpu <= 4 * err_cpu + slack, (*what, name, err_gpu, err_cpu)


def tolerance(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)


def close(gpu_value, cpu_value, dtype, **kw):
    np.testing.assert_allclose(kernels.get_backend("cupy", dtype).to_numpy(gpu_value), cpu_value,
                               **(tolerance(dtype) | kw))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", kernels.ACTIVATIONS)
def test_gpu_forward_and_activation_backward_match_numpy(cupy, dtype, act):
    ref, be = backends(dtype)
    rng = np.random.default_rng(0)
    x, W, b, g = (rng.normal(size=s).astype(dtype) for s in ((7, 5), (5, 4), (4,), (7, 4)))
    activation = kernels.Activation(act, 0.1)
    z0, a0 = ref.forward(x, W, b, activation)
    z1, a1 = be.forward(be.asarray(x), be.asarray(W), be.asarray(b), activation)
    assert isinstance(z1, cupy.ndarray) and a1.dtype == np.dtype(dtype)
    close(z1, z0, dtype)
    close(a1, a0, dtype)
    d0 = ref.activation_backward(g, z0, a0, activation)
    d1 = be.activation_backward(be.asarray(g), z1, a1, activation)
    close(d1, d0, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("out,loss", VALID)
def test_gpu_output_delta_and_loss_match_numpy(cupy, dtype, out, loss):
    ref, be = backends(dtype)
    rng = np.random.default_rng(1)
    activation = kernels.Activation(out, 0.1)
    z = rng.normal(size=(6, 3)).astype(dtype)
    _, a = ref.forward(z, np.eye(3, dtype=dtype), np.zeros(3, dtype), activation)
    y = np.eye(3, dtype=dtype)[rng.integers(0, 3, 6)]
    close(be.output_delta(be.asarray(z), be.asarray(a), be.asarray(y), activation, loss),
          ref.output_delta(z, a, y, activation, loss), dtype)
    value = be.loss(be.asarray(a), be.asarray(y), loss)
    assert isinstance(value, float)
    assert value == pytest.approx(ref.loss(a, y, loss), rel=1e-10 if dtype == "float64" else 1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_backward_gather_and_sgd_update_match_numpy(cupy, dtype):
    ref, be = backends(dtype)
    rng = np.random.default_rng(2)
    x, W, delta = (rng.normal(size=s).astype(dtype) for s in ((8, 5), (5, 3), (8, 3)))
    for need_dx in (True, False):
        for got, want in zip(be.backward(be.asarray(x), be.asarray(W), be.asarray(delta), need_dx),
                             ref.backward(x, W, delta, need_dx)):
            if want is None:
                assert got is None
            else:
                close(got, want, dtype)
    X = rng.integers(0, 256, (20, 5)).astype(np.uint8)
    idx = rng.permutation(20)[:7]
    data = be.prepare_data(X)
    assert isinstance(data, cupy.ndarray) and data.dtype == np.uint8  # uint8 on the device
    close(be.gather(data, idx, 1 / 255), ref.gather(X, idx, 1 / 255), dtype)
    close(be.gather(data, cupy.asarray(idx), 1 / 255), ref.gather(X, idx, 1 / 255), dtype)
    for momentum, decay in ((0.0, 0.0), (0.0, 0.01), (0.9, 0.0), (0.5, 0.02)):
        p, g, v = (rng.normal(size=(5, 3)).astype(dtype) for _ in range(3))
        dp, dv = be.asarray(p), be.asarray(v)
        be.sgd_update(dp, be.asarray(g), dv if momentum else None, 0.1, momentum, decay)
        ref.sgd_update(p, g, v if momentum else None, 0.1, momentum, decay)
        close(dp, p, dtype)
        if momentum:
            close(dv, v, dtype)


@pytest.mark.gpu
def test_gpu_mixing_host_and_device_arrays_is_an_error(cupy):
    ref, be = backends("float32")
    x = np.ones((2, 3), np.float32)
    W, b = be.zeros((3, 2)), be.zeros(2)
    with pytest.raises(TypeError, match="x: expected a CuPy array on the 'cupy' backend, got numpy.ndarray"):
        be.forward(x, W, b, kernels.Activation("sigmoid"))
    with pytest.raises(TypeError, match="X: expected a CuPy array"):
        be.gather(np.zeros((4, 3), np.uint8), np.arange(2), 1.0)
    with pytest.raises(TypeError, match="p: expected a CuPy array"):
        be.sgd_update(np.zeros(2, np.float32), be.zeros(2), None, 0.1)
    with pytest.raises(TypeError, match="CuPy array on the 'numpy' backend"):
        ref.asarray(cupy.zeros(3))
    with pytest.raises(TypeError, match="CuPy array on the 'numpy' backend"):
        ref.prepare_data(cupy.zeros((2, 3)))


def small_problem(n=120, n_in=20, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, n_in)).astype(np.uint8), rng.integers(0, n_out, n)


FUSED_CASES = [  # (hidden, output, loss, SGD options, frozen)
    ("sigmoid", "sigmoid", "quadratic", {}, ()),
    ("tanh", "softmax", "cross_entropy", {"momentum": 0.9, "weight_decay": 0.01}, ()),
    ("relu", "sigmoid", "binary_cross_entropy", {"reduction": "sum", "lr": 0.01}, ()),
    ("leaky_relu", "softmax", "mse", {}, ("b",)),
    ("identity", "tanh", "quadratic", {"momentum": 0.5}, ()),
    ("tanh", "exp", "poisson", {"lr": 0.05}, ()),
]


def two_layer(hidden, output, loss, backend, dtype, n_in=20, n_hidden=8, n_out=3, frozen=(), **kw):
    layers = [fb.Dense(n_in, n_hidden, hidden, frozen=frozen), fb.Dense(n_hidden, n_out, output)]
    return fb.Network(layers, loss=loss, backend=backend, dtype=dtype, seed=5, **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [1, 10, 17])
@pytest.mark.parametrize("hidden,output,loss,options,frozen", FUSED_CASES)
def test_gpu_fused_epoch_matches_numpy(cupy, dtype, batch_size, hidden, output, loss, options, frozen):
    X, y = small_problem()
    cpu = two_layer(hidden, output, loss, "numpy", dtype, frozen=frozen)
    gpu = two_layer(hidden, output, loss, "cupy", dtype, frozen=frozen)
    opt = dict(lr=0.1) | options
    used = []
    original = gpu.backend._fused_epoch

    def spy(*args):
        used.append(True)
        return original(*args)

    gpu.backend._fused_epoch = spy  # what the cupy-fused engine runs, from the fit's plan
    h_cpu = cpu.fit(X, y, epochs=2, batch_size=batch_size, optimizer=fb.SGD(**opt))
    h_gpu = gpu.fit(X, y, epochs=2, batch_size=batch_size, optimizer=fb.SGD(**opt))
    assert used == [True, True] and h_gpu["engine"] == "cupy-fused"  # the fused kernel ran
    if dtype == "float64":
        for p_cpu, p_gpu in zip(cpu.get_params(), gpu.get_params()):
            np.testing.assert_allclose(p_gpu["W"], p_cpu["W"], rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(p_gpu["b"], p_cpu["b"], rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(h_gpu.loss, h_cpu.loss, rtol=1e-9)
        return
    # float32: rounding differences grow over 240 momentum steps at batch 1 (0.4% seen on an H100 for
    # tanh/softmax/momentum 0.9), so the GPU is held to the float64 reference: its float32 error may
    # be at most 4x NumPy's own float32 error, plus 1e-5.
    exact = two_layer(hidden, output, loss, "numpy", "float64", frozen=frozen)
    exact.fit(X, y, epochs=2, batch_size=batch_size, optimizer=fb.SGD(**opt))
    assert_held_to_float64(gpu, cpu, exact, 1e-5)
    np.testing.assert_allclose(h_gpu.loss, h_cpu.loss, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("batch_size", [10, 1000])
def test_gpu_book_network_one_epoch_matches_numpy(cupy, batch_size):
    """784-30-10 sigmoid/quadratic float32 (fused at 10, cuBLAS per batch at 1000): one epoch from
    the same seed agrees with the NumPy reference within float32 tolerance."""
    X, y = small_problem(n=3000, n_in=784, n_out=10, seed=1)
    nets = [fb.Network.from_sizes([784, 30, 10], backend=name, seed=0, dtype=dt)
            for name, dt in (("numpy", "float32"), ("cupy", "float32"), ("numpy", "float64"))]
    for net in nets:
        net.fit(X, y, epochs=1, batch_size=batch_size, lr=3.0)
    # random dense inputs at lr 3.0 amplify float32 rounding over the epoch's steps, so both float32
    # runs are measured against the float64 one: the GPU's error at most 4x NumPy's, plus 1e-4
    for p_cpu, p_gpu, p_exact in zip(*(net.get_params() for net in nets)):
        for name in ("W", "b"):
            err_gpu = np.abs(p_gpu[name] - p_exact[name]).max()
            err_cpu = np.abs(p_cpu[name] - p_exact[name]).max()
            print(f"batch {batch_size} {name}: max error vs float64: gpu {err_gpu:.3g}, numpy float32 {err_cpu:.3g}")
            assert err_gpu <= 4 * err_cpu + 1e-4, (name, err_gpu, err_cpu)


@pytest.mark.gpu
def test_gpu_fused_and_per_batch_paths_agree(cupy):
    X, y = small_problem(n=200)
    fused = two_layer("sigmoid", "sigmoid", "quadratic", kernels.get_backend("cupy", "float64"), None)
    generic = two_layer("sigmoid", "sigmoid", "quadratic", kernels.get_backend("cupy", "float64", fused=False), None)
    h1 = fused.fit(X, y, epochs=3, batch_size=10, lr=0.5)
    h2 = generic.fit(X, y, epochs=3, batch_size=10, lr=0.5)
    np.testing.assert_allclose(h1.loss, h2.loss, rtol=1e-9)
    for a, b in zip(fused.get_params(), generic.get_params()):
        np.testing.assert_allclose(a["W"], b["W"], rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("make", [lambda: fb.Adam(0.01, weight_decay=1e-3),
                                  lambda: fb.SGD(0.2, momentum=0.9, nesterov=True, weight_decay=1e-3)],
                         ids=["adam", "nesterov"])
@pytest.mark.parametrize("sizes,batch_size", [([20, 8, 3], 10), ([20, 8, 6, 3], 130)])
def test_gpu_adam_and_nesterov_match_numpy_on_every_gpu_engine(cupy, fused, make, sizes, batch_size):
    """The CUDA rule (fb_update: fused kernel, update_all, update_one) against the NumPy reference."""
    X, y = small_problem(n=300)
    cpu = fb.Network.from_sizes(sizes, backend="numpy", dtype="float64", seed=1)
    gpu = fb.Network.from_sizes(sizes, backend=kernels.get_backend("cupy", "float64", fused=fused), seed=1)
    h_cpu = cpu.fit(X, y, epochs=2, batch_size=batch_size, optimizer=make())
    h_gpu = gpu.fit(X, y, epochs=2, batch_size=batch_size, optimizer=make())
    expected = ("cupy-fused" if len(sizes) == 3 else "cupy-batched") if fused else "cupy-per-batch"
    assert h_gpu["engine"] == expected and gpu.optimizer.t == cpu.optimizer.t
    np.testing.assert_allclose(h_gpu.loss, h_cpu.loss, rtol=1e-9)
    for p_gpu, p_cpu in zip(gpu.get_params(), cpu.get_params()):
        np.testing.assert_allclose(p_gpu["W"], p_cpu["W"], rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(p_gpu["b"], p_cpu["b"], rtol=1e-9, atol=1e-11)


BATCHED_CASES = [  # (sizes, activations, loss, SGD options, frozen of layer 0, batch size)
    ([20, 8, 3], ("sigmoid", "sigmoid"), "quadratic", {"lr": 3.0}, (), 200),
    ([20, 8, 6, 3], ("tanh", "relu", "sigmoid"), "binary_cross_entropy", {"momentum": 0.9, "weight_decay": 0.01}, (), 130),
    ([20, 8, 3], ("leaky_relu", "identity"), "mse", {"reduction": "sum", "lr": 0.001}, ("b",), 1000),
    ([20, 8, 6, 3], ("sigmoid", "tanh", "tanh"), "quadratic", {"momentum": 0.5}, ("W",), 7),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes,acts,loss,options,frozen,batch_size", BATCHED_CASES)
def test_gpu_batched_epoch_matches_numpy(cupy, dtype, sizes, acts, loss, options, frozen, batch_size):
    """The batched epoch (what the fused kernel does not cover) against the NumPy reference: every
    activation but softmax, each loss, momentum with decay, frozen parameters, the sum reduction,
    a short last batch (300 samples)."""
    X, y = small_problem(n=300, n_in=sizes[0], n_out=sizes[-1])

    def net(backend, dt):
        layers = [fb.Dense(n_in, n_out, act, frozen=frozen if i == 0 else ())
                  for i, (n_in, n_out, act) in enumerate(zip(sizes[:-1], sizes[1:], acts))]
        return fb.Network(layers, loss=loss, backend=backend, dtype=dt, seed=4)

    be = kernels.get_backend("cupy", dtype)
    gpu, cpu, exact = net(be, dtype), net("numpy", dtype), net("numpy", "float64")
    ran = []
    original = be._batched_epoch
    be._batched_epoch = lambda *args: ran.append(1) or original(*args)
    hs = [n.fit(X, y, epochs=2, batch_size=batch_size, optimizer=fb.SGD(**({"lr": 0.5} | options)))
          for n in (gpu, cpu, exact)]
    assert ran == [1, 1] and (gpu.optimizer.layer_state(gpu.layers[0]).keys()
                              == cpu.optimizer.layer_state(cpu.layers[0]).keys())
    if dtype == "float64":
        for p_gpu, p_cpu in zip(gpu.get_params(), cpu.get_params()):
            for name in ("W", "b"):
                np.testing.assert_allclose(p_gpu[name], p_cpu[name], rtol=1e-9, atol=1e-11)
    else:
        assert_held_to_float64(gpu, cpu, exact, 1e-5)
    np.testing.assert_allclose(hs[0].loss, hs[1].loss, rtol=1e-9 if dtype == "float64" else 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make,batch_size,engine", [
    (lambda lr: fb.SGD(lr, momentum=0.9), 10, "cupy-fused-members"),
    (lambda lr: fb.Adam(lr / 10, weight_decay=1e-3), 7, "cupy-fused-members"),
    (lambda lr: fb.SGD(lr, momentum=0.5, nesterov=True), 200, "cupy-batched")], ids=["momentum", "adam", "batched"])
def test_gpu_ensemble_members_equal_the_lone_networks_on_numpy(cupy, dtype, make, batch_size, engine):
    """The ensemble contract on the GPU: member k (seed k, its own learning rate) equals the lone
    network with seed k trained on the NumPy reference; float32 is held to the float64 reference
    as the fused tests are."""
    X, y = small_problem(n=400)
    rates = [0.1, 0.2, 0.4, 0.8, 1.6]
    ens = fb.Ensemble.from_sizes([20, 8, 3], n_models=5, seeds=range(5), backend=kernels.get_backend("cupy", dtype))
    h = ens.fit(X, y, epochs=2, batch_size=batch_size, optimizer=[make(lr) for lr in rates])
    assert h["engine"] == engine
    for k, lr in enumerate(rates):
        ref = {}
        for dt in {dtype, "float64"}:
            ref[dt] = fb.Network.from_sizes([20, 8, 3], seed=k, backend="numpy", dtype=dt)
            ref[dt].fit(X, y, epochs=2, batch_size=batch_size, optimizer=make(lr))
        if dtype == "float64":
            for p_gpu, p_cpu in zip(ens[k].get_params(), ref[dtype].get_params()):
                for name in ("W", "b"):
                    np.testing.assert_allclose(p_gpu[name], p_cpu[name], rtol=1e-9, atol=1e-11)
        else:
            assert_held_to_float64(ens[k], ref[dtype], ref["float64"], 1e-5, (k,))


@pytest.mark.gpu
def test_gpu_an_ensemble_of_132_book_networks_equals_the_lone_fused_networks_bit_for_bit(cupy):
    """132 members of 784-30-10 (one per SM of an H100/H200) in one launch: each member's weights
    after an epoch are exactly those of the same network trained alone by the same kernel."""
    X, y = small_problem(n=1000, n_in=784, n_out=10, seed=2)
    be = kernels.get_backend("cupy", "float32")
    ens = fb.Ensemble.from_sizes([784, 30, 10], n_models=132, seeds=range(132), backend=be)
    rates = list(np.linspace(0.5, 3.0, 132))
    assert ens.fit(X, y, epochs=1, batch_size=10, lr=rates)["engine"] == "cupy-fused-members"
    for k in (0, 1, 64, 131):
        net = fb.Network.from_sizes([784, 30, 10], seed=k, backend=be)
        assert net.fit(X, y, epochs=1, batch_size=10, lr=rates[k])["engine"] == "cupy-fused"
        for p, q in zip(ens[k].get_params(), net.get_params()):
            np.testing.assert_array_equal(p["W"], q["W"])
            np.testing.assert_array_equal(p["b"], q["b"])


@pytest.mark.gpu
@pytest.mark.parametrize("cluster", [2, 4, 8])
def test_gpu_one_network_over_a_cluster_of_sms_matches_numpy(cupy, cluster):
    """CupyBackend(cluster=N) on sm_90: the book network over N SMs (thread-block cluster,
    distributed shared memory) against the float64 reference as the one-block kernel is; a small
    float64 ensemble with Adam exactly as NumPy."""
    X, y = small_problem(n=3000, n_in=784, n_out=10, seed=1)
    be = kernels.get_backend("cupy", "float32", cluster=cluster)
    nets = [fb.Network.from_sizes([784, 30, 10], backend=b, seed=0, dtype=dt)
            for b, dt in ((be, None), ("numpy", "float32"), ("numpy", "float64"))]
    histories = [net.fit(X, y, epochs=1, batch_size=10, lr=3.0) for net in nets]
    assert histories[0]["engine"] == "cupy-fused"
    assert_held_to_float64(*nets, 1e-4, (cluster,))
    X, y = small_problem(n=300)
    ens = fb.Ensemble.from_sizes([20, 9, 3], n_models=3, seeds=range(3),
                                 backend=kernels.get_backend("cupy", "float64", cluster=cluster))
    h = ens.fit(X, y, epochs=2, batch_size=10, optimizer=[fb.Adam(0.01 * (k + 1)) for k in range(3)])
    assert h["engine"] == "cupy-fused-members"
    for k in range(3):
        net = fb.Network.from_sizes([20, 9, 3], seed=k, backend="numpy", dtype="float64")
        ref = net.fit(X, y, epochs=2, batch_size=10, optimizer=fb.Adam(0.01 * (k + 1)))
        np.testing.assert_allclose([e[k] for e in h["loss"]], ref["loss"], rtol=1e-9)
        for p, q in zip(ens[k].get_params(), net.get_params()):
            np.testing.assert_allclose(p["W"], q["W"], rtol=1e-9, atol=1e-11)


@pytest.mark.gpu
def test_gpu_uncovered_configurations_take_the_per_batch_path(cupy):
    X, y = small_problem(n=300)
    be = kernels.get_backend("cupy")
    deep = fb.Network.from_sizes([20, 8, 6, 3], backend=be, seed=0)
    assert be.fused_config(deep.layers, "quadratic", be.prepare_data(X), be.asarray(np.eye(3)[y]), 10) is None
    two = fb.Network.from_sizes([20, 8, 3], backend=be, seed=0)
    big = cb.FUSED_MAX_BATCH + 1
    assert be.fused_config(two.layers, "quadratic", be.prepare_data(X), be.asarray(np.eye(3)[y]), big) is None
    ref = fb.Network.from_sizes([20, 8, 6, 3], backend="numpy", seed=0)
    deep.fit(X, y, epochs=1, batch_size=10, lr=0.5)
    ref.fit(X, y, epochs=1, batch_size=10, lr=0.5)
    for a, b in zip(deep.get_params(), ref.get_params()):
        np.testing.assert_allclose(a["W"], b["W"], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_gpu_predict_returns_numpy_and_auto_picks_cupy(cupy):
    X, y = small_problem(n=50)
    net = fb.Network.from_sizes([20, 8, 3], backend="auto", seed=0)
    assert net.backend.name == "cupy"
    net.fit(X, y, epochs=1, batch_size=10, lr=0.5)
    for out in (net.predict(X), net.predict_proba(X), net.predict(cupy.asarray(X))):
        assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(net.predict(cupy.asarray(X)), net.predict(X))  # device inputs are kept
    net.fit(cupy.asarray(X), y, epochs=1, batch_size=10, lr=0.5)  # training data already on the device
    assert set(net.evaluate(X, y)) == {"accuracy", "loss"}
    info = cb.CupyBackend.info()
    assert info["max_shared_per_block_optin"] > 0
