"""The one table of fastbp's activations, losses and optimisers: names, integer codes, which
output/loss pairs cancel, which outputs each loss accepts, the cross-entropy clip per dtype, the
optimisers' hyperparameter vector and state slots.

The engines take these constants from here instead of writing them down again:
- ``base.py`` re-exports ``ACTIVATIONS``, ``LOSSES``, ``LOSS_OUTPUTS``, ``pairs_with``, ``LOSS_CLIP``;
- the Numba kernels (``_nb_common.py``) bind the codes to the short names (``SIGMOID``, ``BCE``,
  ...), the cancelling pairs' codes and the clip to ``CLIP32``/``CLIP64``, which Numba freezes into
  the compiled code;
- an optimiser's hyperparameters reach every engine as one float64 vector laid out as
  ``HYPERPARAMETERS`` (``FB_HP_LR`` ... in CUDA, ``HP_LR`` ... in Numba), with its code
  (``OPTIMIZER_CODES``): a new optimiser adds entries here, not arguments to every kernel;
- the CUDA sources get ``cuda_defines()`` (``#define FB_SIGMOID 0`` ...) substituted for the
  ``${OPS_DEFINES}`` placeholder of the math section of ``fused_epoch.cu``, and the cupy backend
  passes ``ACT_CODES``/``LOSS_CODES`` and whether a pair is in ``CANCELLING`` to its kernels.
``tests/test_ops.py`` checks that every copy agrees with this table.

Changing a value here: Numba's on-disk cache of each kernel module (``_nb_*.py``) is keyed on that
file only, so clear it (``kernels/__pycache__``, or ``NUMBA_CACHE_DIR``) or the old constants stay
compiled in.
"""
from __future__ import annotations

# name -> (code, short name): the code is what the kernels branch on, the short name is the
# constant's name in the Numba kernels and, prefixed with FB_, in the CUDA sources.
ACTIVATION_TABLE = {
    "sigmoid": (0, "SIGMOID"),
    "tanh": (1, "TANH"),
    "relu": (2, "RELU"),
    "leaky_relu": (3, "LEAKY_RELU"),
    "identity": (4, "IDENTITY"),
    "softmax": (5, "SOFTMAX"),
    "exp": (6, "EXP"),  # the Poisson loss's output (scikit-learn's MLPRegressor(loss="poisson"))
}
LOSS_TABLE = {
    "quadratic": (0, "QUADRATIC"),
    "mse": (1, "MSE"),
    "binary_cross_entropy": (2, "BCE"),
    "cross_entropy": (3, "CE"),
    "poisson": (4, "POISSON"),  # half the Poisson deviance: sum of y log(y / a) - y + a
}

# Optimisers: name -> (code, short name, the names of the state arrays it may keep per parameter).
# "gradient" is a buffer, not state: the Numba rules that need the batch gradient itself (Adam,
# Nesterov momentum) have it summed there; the other engines compute each element's gradient
# where they apply the rule and leave it unused.
OPTIMIZER_TABLE = {
    "sgd": (0, "SGD", ("velocity", "gradient")),  # the velocity with momentum > 0, the buffer with nesterov
    "adam": (1, "ADAM", ("m", "v", "gradient")),
}
# The hyperparameter vector every engine's update rule reads (float64, one per member of a plan):
# nesterov is 1.0 or 0.0; step is the number of updates made before (Adam's bias correction uses
# t = step + 1 for the next one, and the fused epochs t = step + 1 + the batch's index); l2 is an L2
# penalty added to the batch's summed gradient (scikit-learn's alpha), weight_decay one added to its
# mean: the rules use weight_decay + l2 * scale (scale = 1/m for mean gradients).
HYPERPARAMETERS = ("lr", "momentum", "weight_decay", "nesterov", "beta1", "beta2", "eps", "step", "l2")

ACTIVATIONS = tuple(ACTIVATION_TABLE)
LOSSES = tuple(LOSS_TABLE)
ACT_CODES = {name: code for name, (code, _) in ACTIVATION_TABLE.items()}
LOSS_CODES = {name: code for name, (code, _) in LOSS_TABLE.items()}
OPTIMIZER_CODES = {name: code for name, (code, _, _) in OPTIMIZER_TABLE.items()}
HP = {name: i for i, name in enumerate(HYPERPARAMETERS)}  # name -> index in the vector

# The output/loss pairs whose derivatives cancel: dL/dz = a - y at the output layer.
CANCELLING = (("sigmoid", "binary_cross_entropy"), ("softmax", "cross_entropy"), ("exp", "poisson"))

# The output activations each loss can be paired with (any other loss takes any output): a
# cross-entropy needs outputs in (0, 1), and -sum y log a needs them to sum to 1 (softmax), or
# it is minimised by pushing every output to 1.
LOSS_OUTPUTS = {"binary_cross_entropy": ("sigmoid", "softmax"), "cross_entropy": ("softmax",), "poisson": ("exp",)}

# The cross-entropy losses clip the outputs to [c, 1 - c] so that log() stays finite, with c chosen
# per dtype so that 1 - c is representable in it (1 - 1e-12 rounds to 1.0 in float32, and log(0)
# made a finite network's loss NaN): float32's machine epsilon, 1e-12 in float64. Every engine
# clips in the array's own dtype with these values.
LOSS_CLIP = {"float32": 2.0 ** -23, "float64": 1e-12}
# the CUDA macro of each dtype's clip
CLIP_MACROS = {"float32": "FB_CLIP_F32", "float64": "FB_CLIP_F64"}


def pairs_with(output: str, loss: str) -> bool:
    """Whether an output layer with activation ``output`` can be trained with ``loss``."""
    return output in LOSS_OUTPUTS.get(loss, ACTIVATIONS)


def cancels(output: str, loss: str) -> bool:
    """Whether the output activation's derivative cancels against the loss's (delta = a - y)."""
    return (output, loss) in CANCELLING


def cancelling_codes():
    """``CANCELLING`` as (activation code, loss code) pairs, for the compiled kernels."""
    return tuple((ACT_CODES[output], LOSS_CODES[loss]) for output, loss in CANCELLING)


def cuda_macros() -> dict:
    """The table as CUDA macros, name -> value text: ``FB_SIGMOID`` -> ``"0"`` ..., ``FB_CE`` -> ``"3"``,
    ``FB_OPT_SGD`` -> ``"0"``, ``FB_HP_LR`` -> ``"0"`` (an index in the hyperparameter vector) ...,
    ``FB_N_HP`` (the vector's length),
    ``FB_CLIP_F32``/``FB_CLIP_F64`` -> the clip written with ``repr`` (it reads back as the same double)."""
    macros = {f"FB_{short}": str(code) for code, short in ACTIVATION_TABLE.values()}
    macros.update({f"FB_{short}": str(code) for code, short in LOSS_TABLE.values()})
    macros.update({f"FB_OPT_{short}": str(code) for code, short, _ in OPTIMIZER_TABLE.values()})
    macros.update({f"FB_HP_{name.upper()}": str(i) for i, name in enumerate(HYPERPARAMETERS)})
    macros["FB_N_HP"] = str(len(HYPERPARAMETERS))  # the vector's length (a row of the members' table)
    macros.update({macro: repr(float(LOSS_CLIP[dtype])) for dtype, macro in CLIP_MACROS.items()})
    return macros


def cuda_defines() -> str:
    """The ``#define`` lines that the ``${OPS_DEFINES}`` placeholder of the CUDA sources stands for:
    ``#define FB_SIGMOID 0`` ..., one per line, no newline after the last."""
    return "\n".join(f"#define {name} {value}" for name, value in cuda_macros().items())
