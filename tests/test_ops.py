"""The one table of ops (kernels/ops.py) and every copy of it: the re-exports, the Numba kernels'
constants (and what the compiled kernels do with them), the cupy backend's codes, the rendered CUDA
sources' #define lines. No GPU and no CuPy needed."""
import math
import re
from pathlib import Path

import numpy as np
import pytest

import fastbp.kernels as kernels
from fastbp.kernels import base, cupy_backend as cb, ops

KERNELS = Path(kernels.__file__).parent
CONFIGS = [  # render_fused_epoch arguments: both dtypes, both input types, every output and loss
    dict(n_in=784, n_hidden=30, n_out=10, batch_size=10),
    dict(n_in=64, n_hidden=16, n_out=10, batch_size=1, dtype="float64", hidden="tanh",
         output="sigmoid", loss="binary_cross_entropy", threads=256),
    dict(n_in=32, n_hidden=8, n_out=4, batch_size=32, dtype="float32", input_dtype="float32",
         hidden="relu", output="softmax", loss="cross_entropy"),
    dict(n_in=2, n_hidden=3, n_out=1, batch_size=100, dtype="float64", input_dtype="float64",
         hidden="leaky_relu", output="identity", loss="mse", threads=128),
]
DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(FB_\w+)(\(?)[ \t]*(.*)$", re.M)


# --- the table itself --------------------------------------------------------------------------
@pytest.mark.parametrize("table", [ops.ACTIVATION_TABLE, ops.LOSS_TABLE], ids=["activations", "losses"])
def test_codes_are_0_to_n_and_short_names_unique(table):
    assert sorted(code for code, _ in table.values()) == list(range(len(table)))
    shorts = [short for _, short in table.values()]
    assert len(set(shorts)) == len(shorts)
    assert all(s.isidentifier() and s.isupper() for s in shorts)


def test_todays_codes_are_kept():
    assert ops.ACT_CODES == {"sigmoid": 0, "tanh": 1, "relu": 2, "leaky_relu": 3, "identity": 4, "softmax": 5,
                             "exp": 6}
    assert ops.LOSS_CODES == {"quadratic": 0, "mse": 1, "binary_cross_entropy": 2, "cross_entropy": 3, "poisson": 4}
    assert ops.ACTIVATIONS == tuple(ops.ACT_CODES) and ops.LOSSES == tuple(ops.LOSS_CODES)


def test_pairs_and_pairings_name_the_tables_entries():
    shorts_a = {s for _, s in ops.ACTIVATION_TABLE.values()}
    assert not shorts_a & {s for _, s in ops.LOSS_TABLE.values()}  # one namespace in CUDA and Numba
    assert ops.CANCELLING == (("sigmoid", "binary_cross_entropy"), ("softmax", "cross_entropy"), ("exp", "poisson"))
    for output, loss in ops.CANCELLING:
        assert ops.pairs_with(output, loss) and ops.cancels(output, loss)
    for loss, outputs in ops.LOSS_OUTPUTS.items():
        assert loss in ops.LOSSES and set(outputs) <= set(ops.ACTIVATIONS)
    assert ops.cancelling_codes() == ((0, 2), (5, 3), (6, 4))
    assert not ops.cancels("sigmoid", "quadratic") and not ops.cancels("softmax", "binary_cross_entropy")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_keeps_one_minus_clip_below_one_in_its_dtype(dtype):
    c = ops.LOSS_CLIP[dtype]
    T = np.dtype(dtype).type
    assert 0 < c < 0.5 and float(T(c)) == c  # exact in its own dtype
    assert T(1) - T(c) < T(1)
    assert float(ops.cuda_macros()[ops.CLIP_MACROS[dtype]]) == c  # repr reads back exactly


def test_base_and_the_package_reexport_the_table():
    for name in ("ACTIVATIONS", "LOSSES", "LOSS_OUTPUTS", "LOSS_CLIP", "pairs_with"):
        assert getattr(base, name) is getattr(ops, name), name
        assert getattr(kernels, name) is getattr(ops, name), name


# --- the Numba kernels -------------------------------------------------------------------------
def test_the_numba_kernels_constants_are_the_tables():
    pytest.importorskip("numba")
    from fastbp.kernels import _nb_common as K

    assert K.ACT_CODES == ops.ACT_CODES and K.LOSS_CODES == ops.LOSS_CODES
    for table in (ops.ACTIVATION_TABLE, ops.LOSS_TABLE):
        for name, (code, short) in table.items():
            assert getattr(K, short) == code, (name, short)
    pairs = {(K.CANCEL_ACT_1, K.CANCEL_LOSS_1), (K.CANCEL_ACT_2, K.CANCEL_LOSS_2), (K.CANCEL_ACT_3, K.CANCEL_LOSS_3)}
    assert pairs == set(ops.cancelling_codes()) and len(pairs) == len(ops.CANCELLING)
    assert (K.CLIP32, K.CLIP64) == (ops.LOSS_CLIP["float32"], ops.LOSS_CLIP["float64"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_compiled_output_deltas_follow_the_table(dtype):
    """What the compiled code does (a stale Numba cache would show here): delta = a - y exactly for
    the cancelling pairs and only for them (among sigmoid and softmax outputs, where it differs),
    and the cross-entropies clip at the table's constant."""
    pytest.importorskip("numba")
    from fastbp.kernels import _nb_math as K

    T = np.dtype(dtype).type
    z = np.array([0.3, -1.2, 2.0, 0.1], dtype)
    a = np.array([0.2, 0.1, 0.6, 0.1], dtype)  # sums to 1: a softmax output as well as sigmoids
    y = np.array([0.0, 0.0, 1.0, 0.0], dtype)
    for output in ("sigmoid", "softmax", "exp"):
        out = np.exp(z) if output == "exp" else a
        for loss in ops.LOSSES:
            if loss == "poisson" and output == "softmax":
                continue  # 1 - y/a through softmax's backward pass is a - y too, for targets summing to 1
            d = np.zeros_like(a)
            K.output_delta_row(z, out, y, d, 4, ops.ACT_CODES[output], T(0.01), ops.LOSS_CODES[loss], T(0))
            assert np.array_equal(d, out - y) == ops.cancels(output, loss), (output, loss)
    c = ops.LOSS_CLIP[dtype]
    for loss, expected in (("binary_cross_entropy", -math.log(c)), ("cross_entropy", -math.log(c))):
        a0, y1 = np.zeros(1, dtype), np.ones(1, dtype)  # a = 0 against y = 1: clipped to c
        value = K.output_delta_row(a0, a0, y1, np.zeros(1, dtype), 1, ops.ACT_CODES["identity"], T(0.01),
                                   ops.LOSS_CODES[loss], T(0))
        assert value == pytest.approx(expected, rel=1e-12), loss


# --- the cupy backend and the CUDA sources ------------------------------------------------------
def test_the_cupy_backend_takes_its_codes_from_the_table():
    assert cb.ACT_CODES is ops.ACT_CODES and cb.LOSS_CODES is ops.LOSS_CODES
    assert cb.CANCELLING is ops.CANCELLING


def test_cuda_defines_are_the_table():
    text = ops.cuda_defines()
    assert not text.endswith("\n")
    lines = text.split("\n")
    assert lines[0] == "#define FB_SIGMOID 0" and "#define FB_CE 3" in lines
    parsed = {m.group(1): m.group(3) for m in DEFINE.finditer(text)}
    assert len(parsed) == len(lines) == (len(ops.ACTIVATIONS) + len(ops.LOSSES) + len(ops.LOSS_CLIP)
                                         + len(ops.OPTIMIZER_TABLE) + len(ops.HYPERPARAMETERS) + 1)
    for table in (ops.ACTIVATION_TABLE, ops.LOSS_TABLE):
        for code, short in table.values():
            assert int(parsed[f"FB_{short}"]) == code
    for code, short, _ in ops.OPTIMIZER_TABLE.values():
        assert int(parsed[f"FB_OPT_{short}"]) == code
    for name, i in ops.HP.items():
        assert int(parsed[f"FB_HP_{name.upper()}"]) == i
    assert int(parsed["FB_N_HP"]) == len(ops.HYPERPARAMETERS)  # a row of the members' table
    for dtype, macro in ops.CLIP_MACROS.items():
        assert float(parsed[macro]) == ops.LOSS_CLIP[dtype]
    assert parsed == ops.cuda_macros()


def rendered_sources():
    yield "math_preamble", cb.math_preamble()
    for dt, xt in (("float32", "uint8"), ("float64", "uint8"), ("float32", "float32"), ("float64", "float64")):
        yield f"batch {dt} {xt}", cb.render_batch_kernels(dt, xt)
    for i, config in enumerate(CONFIGS):
        yield f"fused {i}", cb.render_fused_epoch(**config)


def test_the_rendered_cuda_sources_define_exactly_the_table():
    """Each rendered source defines every code and clip macro of the table once, with the table's
    value, and no other FB_ constant (FB_ function-like macros such as FB_GRID_STRIDE are code)."""
    table = ops.cuda_macros()
    for name, src in rendered_sources():
        assert "${" not in src, name
        constants = [(m.group(1), m.group(3).strip()) for m in DEFINE.finditer(src) if not m.group(2)]
        assert sorted(constants) == sorted(table.items()), name
        assert src.count(ops.cuda_defines()) == 1, name


def test_the_cuda_files_hold_no_codes_or_clips_of_their_own():
    """The .cu templates get the table through one ${OPS_DEFINES} placeholder, in the math section
    (so the fused kernel, the batched kernels and the elementwise kernels all have it)."""
    fused = (KERNELS / "fused_epoch.cu").read_text()
    math_section = fused[fused.index("// ---- BEGIN MATH ----"):fused.index("// ---- END MATH ----")]
    assert fused.count("${OPS_DEFINES}") == 1 and "${OPS_DEFINES}" in math_section
    for path in sorted(KERNELS.glob("*.cu")):
        text = path.read_text()
        constants = [m.group(1) for m in DEFINE.finditer(text) if not m.group(2)]
        assert constants == [], (path.name, constants)
        for macro in ops.cuda_macros():
            assert not re.search(rf"#\s*define\s+{macro}\b", text), (path.name, macro)
        # the code comparisons go through the macros, never a literal code
        assert not re.search(r"\b(ACT|LOSS|OUT_ACT|HID_ACT|code|act|loss)\s*[!=]=\s*\d", text), path.name


@pytest.mark.parametrize("module", ["_nb_common.py", "_nb_intrinsics.py", "_nb_math.py", "_nb_blocked.py",
                                    "_nb_epoch.py", "_nb_batch.py", "cupy_backend.py", "base.py", "numpy_backend.py",
                                    "plan.py", "numba_backend.py"])
def test_no_python_copy_of_the_codes_or_pairs_is_left(module):
    """The modules that used to spell the table out now import it."""
    text = (KERNELS / module).read_text()
    assert not re.search(r"""["'](sigmoid|tanh|relu|leaky_relu|identity|softmax|quadratic|mse|"""
                         r"""binary_cross_entropy|cross_entropy)["']\s*:\s*\d""", text), module
    assert not re.search(r"""\(\s*["']sigmoid["']\s*,\s*["']binary_cross_entropy["']\s*\)""", text), module
    assert not re.search(r"=\s*range\(\s*\d+\s*\)", text), module
    assert "1e-12" not in text and "2.0 ** -23" not in text, module


# --- the optimisers' update rule: one copy per language ------------------------------------------
def test_the_update_rule_is_written_once_per_language():
    """The CUDA rule (fb_update) is defined once, in the math section every source starts with, and
    each CUDA update calls it; the cupy backend builds no elementwise kernels of its own; in the
    Numba kernels only _nb_optim.py reads the momentum."""
    assert cb.math_preamble().count("fb_update(const fb_rule") == 1
    fused = cb.render_fused_epoch(**CONFIGS[0])
    batch = cb.render_batch_kernels()
    assert fused.count("fb_update(const fb_rule") == 1 and batch.count("fb_update(const fb_rule") == 1
    assert fused.count("fb_update(rule,") == 4  # W0, W1, b0, b1
    assert batch.count("fb_update(rule,") == 2  # update_all (batched epoch), update_one (per batch)
    for text in (fused, batch):
        kernels_part = text[text.index("// ---- END MATH ----"):] if "END MATH" in text else text[len(cb.math_preamble()):]
        assert "FB_HP_" not in kernels_part  # the kernels read hyperparameters only through fb_rule_for
    source = (KERNELS / "cupy_backend.py").read_text()
    assert "ElementwiseKernel" not in source and "ReductionKernel" not in source
    readers = sorted(p.name for p in KERNELS.glob("_nb_*.py") if "HP_MOMENTUM" in p.read_text())
    assert readers == ["_nb_common.py", "_nb_optim.py"]  # where it is bound, and the one rule
