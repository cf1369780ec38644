"""Plots for users (the ``plot`` extra: matplotlib): training curves of a History and the bar
chart of ``fastbp bench``. Figures are drawn without pyplot (no global state, no display needed)
and written as PNG through ``_io.atomic_write`` (a temporary name, then renamed)."""
from __future__ import annotations

import math

from ._io import atomic_write

INSTALL = 'plots need matplotlib: pip install "fastbp[plot]"'
CURVES_SIZE = (9.0, 3.6)  # inches, at 100 dpi: 900 x 360 pixels
BARS_DPI = 100


class PlotsUnavailable(ValueError):
    """matplotlib is not installed (the message says how to install it)."""


def require_matplotlib():
    """Raise PlotsUnavailable unless matplotlib imports (checked before any work is done)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotsUnavailable(INSTALL) from None


def _figure(size):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png")


def _series(values):
    """Per-epoch values as one list per line: a lone network's floats, or an ensemble's lists."""
    if values and isinstance(values[0], (list, tuple)):
        return [[row[k] for row in values] for k in range(len(values[0]))]
    return [list(values)] if values else []


def training_curves(history, path, title=None):
    """The training loss (and validation loss) and the validation accuracy per epoch, one line per
    member for an ensemble, as a PNG of CURVES_SIZE."""
    fig = _figure(CURVES_SIZE)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    losses, val_losses = _series(history.get("loss", [])), _series(history.get("val_loss", []))
    many = len(losses) > 1
    diverged = history.get("diverged") or {}

    def name(k):
        return f"member {k}" + (f" (diverged in epoch {diverged[k]})" if k in diverged else "")

    for k, series in enumerate(losses):
        epochs = range(1, len(series) + 1)
        left.plot(epochs, series, color=f"C{k % 10}", label=name(k) if many else "training loss")
        if k < len(val_losses):
            left.plot(epochs, val_losses[k], color=f"C{k % 10}", linestyle="--",
                      label=None if many else "validation loss")
    finite = [v for series in losses + val_losses for v in series if v is not None and math.isfinite(v) and v > 0]
    if finite and max(finite) > 100 * min(finite):  # a wide range: a log scale shows every epoch
        left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("loss (mean per sample)")
    left.set_title("loss" + (" (dashed: validation)" if val_losses else ""))
    if 0 < len(losses) <= 10:  # more members than that: a legend would hide the curves
        left.legend(fontsize="small")
    accuracies = _series(history.get("val_accuracy", []))
    for k, series in enumerate(accuracies):
        right.plot(range(1, len(series) + 1), series, color=f"C{k % 10}", label=name(k) if many else None)
    right.set_xlabel("epoch")
    right.set_ylabel("validation accuracy")
    right.set_title("validation accuracy" if accuracies else "validation accuracy (no validation data)")
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    _save(fig, path)


def bench_bars(rows, path, title):
    """``rows``: (label, samples per second) pairs; a horizontal bar chart, log scale, as PNG."""
    height = 1.2 + 0.38 * max(1, len(rows))
    fig = _figure((9.0, height))
    ax = fig.add_subplot(1, 1, 1)
    labels = [label for label, _ in rows][::-1]
    values = [value for _, value in rows][::-1]
    ax.barh(range(len(values)), values, color=[f"C{i % 10}" for i in range(len(values))][::-1])
    ax.set_yticks(range(len(values)), labels, fontsize="small")
    ax.set_xscale("log")
    ax.set_xlabel("samples per second (log scale; more is faster)")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.0f}", va="center", fontsize="x-small")
    if values:
        ax.set_xlim(min(values) / 2, max(values) * 4 if math.isfinite(max(values)) else None)
    ax.set_title(title, fontsize="small")
    fig.tight_layout()
    _save(fig, path)
