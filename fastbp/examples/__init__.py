"""Worked textbook examples of backpropagation, reproduced through fastbp's public API.

Each example is a module with a ``main(argv=None)`` (its command-line arguments; ``--help`` lists
them) and a docstring naming its source, the published figures and where fastbp's exact maths
differs. From the shell: ``fastbp examples`` lists them, ``fastbp examples NAME [ARGS]`` runs one;
from a checkout, ``python scripts/examples/NAME.py [ARGS]`` does the same.

>>> from fastbp import examples
>>> examples.list_examples()[0]
('worked_222', 'The 2-2-2 worked example: one update by hand-checkable backprop, then 10,000')
>>> examples.run("himmelblau", ["--no-plots"])  # doctest: +SKIP
"""
from __future__ import annotations

import importlib

# name -> (module of this package, one-line description); modules are imported when run
EXAMPLES = {
    "worked_222": ("worked_222", "The 2-2-2 worked example: one update by hand-checkable backprop, then 10,000"),
    "and_gate": ("and_gate", "AND gate: 2-4-1 sigmoid net, binary cross-entropy, summed full-batch gradients"),
    "per_sample_221": ("per_sample_221", "Per-sample SGD on a 2-2-1 net: the weight/height toy"),
    "moons": ("moons", "Deep 2-25-50-25-2 sigmoid net on two moons, per-sample SGD, three plots"),
    "nielsen_mnist": ("nielsen_mnist", "Nielsen's 784-30-10 network: batch 10, eta 3.0, 30 epochs"),
    "himmelblau": ("himmelblau", "Himmelblau's function minimised by fastbp's SGD from four starts"),
    "derivatives": ("derivatives", "Activation derivatives and backprop gradients vs finite differences"),
}


def list_examples():
    """``[(name, description), ...]`` for every example, in a teaching order."""
    return [(name, description) for name, (_, description) in EXAMPLES.items()]


def get_module(name):
    """The module of example ``name``."""
    if not isinstance(name, str) or name not in EXAMPLES:
        raise ValueError(f"example: expected one of {', '.join(EXAMPLES)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{EXAMPLES[name][0]}")


def run(name, argv=None):
    """Run example ``name`` with command-line arguments ``argv`` (a list of strings); returns
    its exit status (0 or None on success)."""
    return get_module(name).main(list(argv) if argv is not None else [])


__all__ = ["EXAMPLES", "list_examples", "get_module", "run"]
