"""What the compiled kernels of the numba backend (imported only when that backend is asked for)
share: ``JIT``, the options every kernel is compiled with, and the op table's constants
(activation, loss and optimiser codes, cancelling pairs, cross-entropy clip, the hyperparameter
vector's layout) from ``ops.py`` under the short
names the kernels branch on. The kernels, one module per job:

- ``_nb_intrinsics.py``: LLVM intrinsics (bit casts, acquire/release atomics, prefetch, pause,
  sched_yield);
- ``_nb_math.py``: the polynomial exp, the activations and their derivatives, the output deltas
  and the losses;
- ``_nb_optim.py``: the optimisers' update rules, written once for the fused and per-batch paths;
- ``_nb_blocked.py``: the register-blocked products of a layer (forward, weight gradient, backprop)
  and its update (the rule of ``_nb_optim.py`` around the blocked gradient), with the layout of
  the weights they work on;
- ``_nb_epoch.py``: the fused epochs (``train_epoch``; ``train_epoch_2t`` with its barrier) and the
  gather/prefetch of batches into aligned buffers;
- ``_nb_batch.py``: the per-batch kernels of the generic path;
- ``_numba_ensemble.py``: the epoch of the members of a plan with a model axis.

Arithmetic stays in the network's dtype (float32 or float64) with fastmath minus nnan/ninf
(LLVM may reassociate sums, which lets reductions vectorise; NaN/inf still propagate so a
diverging run is still detected).

Every kernel is compiled with ``cache=True``: a new process loads it from disk. Numba keys each
function's cache on its own file only, and a caller's compiled code contains its callees from the
other modules: after editing a kernel module (or a constant of ``ops.py``), clear
``kernels/__pycache__`` (or use a fresh ``NUMBA_CACHE_DIR``), or the callers elsewhere keep the
old code.
"""
from __future__ import annotations

from . import ops

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")

# The activation and loss codes, the cancelling output/loss pairs and the cross-entropy clip, from
# the one table (ops.py); Numba freezes these globals into the compiled code (and its disk cache).
ACT_CODES, LOSS_CODES = ops.ACT_CODES, ops.LOSS_CODES
SIGMOID, TANH, RELU, LEAKY_RELU, IDENTITY, SOFTMAX = (ops.ACT_CODES[name] for name in (
    "sigmoid", "tanh", "relu", "leaky_relu", "identity", "softmax"))
QUADRATIC, MSE, BCE, CE = (ops.LOSS_CODES[name] for name in (
    "quadratic", "mse", "binary_cross_entropy", "cross_entropy"))
# The (activation code, loss code) pairs whose derivatives cancel (delta = a - y). output_delta_row
# tests both inline: that compiles to the same code as the literal test it replaces (a helper
# looping over the pairs compiled differently). A third pair in ops.CANCELLING fails to unpack here.
(CANCEL_ACT_1, CANCEL_LOSS_1), (CANCEL_ACT_2, CANCEL_LOSS_2) = ops.cancelling_codes()
CLIP32, CLIP64 = ops.LOSS_CLIP["float32"], ops.LOSS_CLIP["float64"]  # the cross-entropy losses' clip
# The optimisers' codes and the hyperparameter vector's layout (ops.OPTIMIZER_TABLE, ops.HYPERPARAMETERS).
OPT_SGD = ops.OPTIMIZER_CODES["sgd"]
HP_LR, HP_MOMENTUM, HP_WEIGHT_DECAY = (ops.HP[name] for name in ("lr", "momentum", "weight_decay"))
