"""Learning-rate schedules: the rate of each epoch of a fit, set on the optimiser before it.

``Network.fit(lr=...)`` and ``Ensemble.fit(lr=...)`` take a number (constant), one of these, or
any ``callable(epoch) -> lr`` (epoch counted from 0 within the fit):

- ``Constant(lr)``;
- ``InverseScaling(lr, power_t=0.5)``: ``lr / (t + 1) ** power_t`` with t the samples trained on
  before the epoch (scikit-learn's "invscaling", which counts samples the same way);
- ``Adaptive(lr, tol=1e-4, patience=2, factor=5.0, min_lr=1e-6)``: scikit-learn's "adaptive":
  the rate is divided by ``factor`` each time ``patience`` consecutive epochs fail to lower the
  training loss by ``tol``; once it would fall below ``min_lr`` training stops.

A schedule is told each epoch's mean training loss (``observe``) and may end the fit (``done``).
Each member of an ensemble gets its own copy of a stateful schedule.
"""
from __future__ import annotations

import copy
import math
import numbers

from ._validation import check_nonneg_float, check_positive_float


class Schedule:
    """The base: ``rate(epoch, seen)`` the learning rate of an epoch (``seen``: samples trained on
    in this fit before it); ``observe(loss)`` after each epoch; ``done`` ends the fit."""

    done = False

    def rate(self, epoch, seen):
        raise NotImplementedError

    def observe(self, loss):
        """The epoch's mean training loss (NaN when it diverged)."""


class Constant(Schedule):
    def __init__(self, lr):
        self.lr = check_positive_float(lr, "lr")

    def __repr__(self):
        return f"Constant({self.lr!r})"

    def rate(self, epoch, seen):
        return self.lr


class InverseScaling(Schedule):
    """``lr / (seen + start + 1) ** power_t``; ``start``: samples trained on before this fit (a
    fit that goes on from an earlier one, as scikit-learn's ``t_``)."""

    def __init__(self, lr, power_t=0.5, start=0):
        self.lr = check_positive_float(lr, "lr")
        self.power_t = check_nonneg_float(power_t, "power_t")
        if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0:
            raise ValueError(f"start: expected an integer >= 0, got {start!r}")
        self.start = int(start)

    def __repr__(self):
        return f"InverseScaling({self.lr!r}, power_t={self.power_t!r})"

    def rate(self, epoch, seen):
        return self.lr / (self.start + seen + 1) ** self.power_t


class Adaptive(Schedule):
    """See the module doc. ``best``: the lowest loss so far; ``count``: the epochs since it last
    improved by ``tol``."""

    def __init__(self, lr, tol=1e-4, patience=2, factor=5.0, min_lr=1e-6):
        self.lr = check_positive_float(lr, "lr")
        self.tol = check_nonneg_float(tol, "tol")
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 1:
            raise ValueError(f"patience: expected an integer >= 1, got {patience!r}")
        self.patience = int(patience)
        self.factor = check_positive_float(factor, "factor")
        if self.factor <= 1:
            raise ValueError(f"factor: expected a number > 1, got {factor!r}")
        self.min_lr = check_nonneg_float(min_lr, "min_lr")
        self.best, self.count, self.done = math.inf, 0, False

    def __repr__(self):
        return f"Adaptive({self.lr!r}, tol={self.tol!r}, patience={self.patience!r}, factor={self.factor!r})"

    def rate(self, epoch, seen):
        return self.lr

    def observe(self, loss):
        if not loss < self.best - self.tol:  # NaN counts as no improvement
            self.count += 1
        else:
            self.count = 0
        if loss < self.best:
            self.best = loss
        if self.count >= self.patience:
            self.count = 0
            if self.lr / self.factor < self.min_lr:
                self.done = True
            else:
                self.lr /= self.factor


class FromCallable(Schedule):
    """``f(epoch) -> lr`` as a schedule (the value is checked each epoch)."""

    def __init__(self, f):
        self.f = f

    def __repr__(self):
        return f"FromCallable({self.f!r})"

    def rate(self, epoch, seen):
        value = self.f(epoch)
        try:
            return check_positive_float(value, "lr")
        except (TypeError, ValueError) as e:
            raise type(e)(f"{e} (returned by the schedule {self.f!r} for epoch {epoch})") from None


def as_schedule(lr, name="lr", copy_state=False):
    """``lr`` as a Schedule: a number (Constant), a Schedule (itself, or a copy with
    ``copy_state``: each member of an ensemble keeps its own), or a callable ``f(epoch) -> lr``."""
    if isinstance(lr, Schedule):
        return copy.deepcopy(lr) if copy_state else lr
    if callable(lr):
        return FromCallable(lr)
    try:
        return Constant(lr)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: expected a positive number, a fastbp schedule or a callable(epoch) -> lr, "
                      f"got {lr!r}") from None
