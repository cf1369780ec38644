"""What the examples share: argument parsing and plots written atomically (matplotlib optional)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .._io import atomic_write

DEFAULT_OUT = "fastbp-examples"


def parser(name, doc):
    """An argument parser for example ``name``, described by the first line of its docstring."""
    return argparse.ArgumentParser(prog=f"fastbp examples {name}", description=doc.strip().splitlines()[0])


def add_backend(p, default):
    """``--backend``; ``default="cpu"`` means numba when available, else numpy."""
    from ..kernels import BACKENDS

    shown = "numba when available, else numpy" if default == "cpu" else default
    choices = BACKENDS + ("cpu",) if default == "cpu" else BACKENDS
    p.add_argument("--backend", default=default, choices=choices, help=f"compute backend (default: {shown})")


def add_plots(p):
    p.add_argument("--out", default=DEFAULT_OUT, help=f"folder for the PNG plots (default ./{DEFAULT_OUT}/)")
    p.add_argument("--no-plots", action="store_true", help="do not draw plots")


def figure_class(no_plots=False, out=print):
    """matplotlib's Figure class (no pyplot, so no global state or GUI), or None with a message
    when plots are off or matplotlib is not installed."""
    if no_plots:
        out("plots skipped (--no-plots)")
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        out("plots skipped: matplotlib is not installed (pip install 'fastbp[plot]')")
        return None
    return Figure


def save_png(fig, folder, filename):
    """Write ``fig`` to ``folder/filename`` through a temporary file and a rename; returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    return path
