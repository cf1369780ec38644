"""The training loop shared by ``Network.fit`` (one member) and ``Ensemble.fit`` (K members).

Per fit: the inputs are checked once, the backend is asked for a training plan of all members
(``make_plan``: the packed parameters of the K networks, built once per fit; ``None`` where its
fused engines do not cover them, and then each member's epoch runs through ``Network._run_epoch``).
Per epoch, for each member still training: its own sample order from its own generator, so
member k trains exactly as the lone network with its seed would. A member whose loss or weights
become NaN/inf is put back to its weights at the start of that epoch and stops; ``on_diverged``
decides what then happens (the lone network raises). An epoch that raises (Ctrl-C) is undone for
every member.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._validation import check_inputs, check_positive_int, check_sample_weight, check_targets
from .kernels.sparse import SparseRows, is_sparse


def check_fit_data(X, y, batch_size, validation_data, n_in, n_out):
    """``(X, scale, Y, batch_size)`` checked as ``fit`` takes them."""
    X, scale = check_inputs(X, n_in)
    n = X.shape[0]
    batch_size = n if batch_size is None else min(check_positive_int(batch_size, "batch_size"), n)
    Y = check_targets(y, n, n_out)
    if validation_data is not None:
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise TypeError("validation_data: expected a pair (X_val, y_val)")
        Xv, yv = validation_data
        Xv, _ = check_inputs(Xv, n_in, "validation_data[0]")
        check_targets(yv, Xv.shape[0], n_out, "validation_data[1]")
    return X, scale, Y, batch_size


def check_callback(callback):
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable, got {callback!r}")


PARALLEL_DRAWS = 500_000  # sample indices an epoch's orders hold, from which they are drawn on threads


def draw_orders(rngs, n, out):
    """``out[k] = rngs[k].permutation(n)`` for each row k -> generator of ``rngs``: each member's
    order from its own generator, so the values are those drawn one by one. Many of them (an
    ensemble of 132 on 60,000 samples: 0.15-0.25 s an epoch on one core here) are drawn on
    threads (NumPy releases the GIL while it shuffles), made for the call and gone after it."""
    def draw(k):
        out[k] = rngs[k].permutation(n)

    # (os.cpu_count() asked only for many draws: it costs 20 us a call here, a tenth of a short epoch)
    workers = 1 if len(rngs) * n < PARALLEL_DRAWS else min(len(rngs), os.cpu_count() or 1)
    if workers < 2:
        for k in rngs:
            draw(k)
        return out
    pool = ThreadPoolExecutor(workers, thread_name_prefix="fastbp-orders")
    try:
        for future in [pool.submit(draw, k) for k in rngs]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an interrupt: the queued draws are dropped
    return out


class Run:
    """One fit of K members of one shape and backend; ``epoch()`` trains each active member one
    epoch. Holds the plan (or None), the data on the backend, and which members diverged."""

    def __init__(self, members, optimizers, X, scale, Y, batch_size, shuffle, weights=None):
        self.members = members
        self.weights = weights  # per-sample weights (NumPy), or None
        self.optimizers = optimizers
        self.be = be = members[0].backend
        self.loss = members[0].loss
        self.scale, self.batch_size, self.shuffle = scale, batch_size, shuffle
        self.n = X.shape[0]
        self.total = self.n if weights is None else float(weights.sum())  # what the epoch's loss is a mean over
        self.data, self.targets = be.prepare_data(X), be.asarray(Y)
        self.networks = [m.layers for m in members]
        # weighted fits run the per-batch loop (the fused engines take no weights)
        self.plan = None if weights is not None else be.make_plan(self.networks, self.loss, optimizers, self.data,
                                                                   self.targets, batch_size)
        self.diverged = {}  # member -> the epoch (from 1) in which it diverged
        self.stale = False  # the layers lag behind the plan

    @property
    def engine(self):
        """The name of the backend's engine that runs this fit (``<backend>-per-batch`` without a plan)."""
        return self.be.engine(self.plan)

    @property
    def inputs(self):
        """What the engine reads of the training inputs: its layout ("dense", "sparse" for the
        sparse engines' nonzero rows, "scipy.sparse" for the per-batch loop's CSR) and bytes; for
        the sparse rows also the density and the bytes of the same data dense."""
        rows = getattr(self.plan, "inputs", None)
        if isinstance(rows, SparseRows):
            return {"layout": "sparse", "nbytes": rows.nbytes, "density": rows.density,
                    "dense_nbytes": rows.dense_nbytes}
        data = self.data if rows is None else rows
        if is_sparse(data):
            return {"layout": "scipy.sparse", "nbytes": data.data.nbytes + data.indices.nbytes + data.indptr.nbytes}
        return {"layout": "dense", "nbytes": int(data.nbytes)}

    def warmup(self):
        if self.plan is None:
            return 0.0  # the per-batch kernels compile (or load) on first use
        return self.be.warmup_plan(self.plan, self.data, self.targets, self.batch_size)

    def active(self):
        return [k for k in range(len(self.members)) if k not in self.diverged]

    def epoch(self, number, orders=None):
        """Train the active members one epoch; returns (summed losses per member, NaN for those
        not trained, the members that diverged in this epoch). ``orders``: member -> its sample
        order for this epoch (default: drawn from its generator, or 0..n-1 without shuffling)."""
        active = self.active()
        O = None
        if orders is None:  # one row per member (those not training: zeros)
            O = np.zeros((len(self.members), self.n), dtype=np.int64)
            if self.shuffle:
                draw_orders({k: self.members[k].rng for k in active}, self.n, O)
            else:
                O[active] = np.arange(self.n)
            orders = {k: O[k] for k in active}
        if self.plan is not None:
            return self._plan_epoch(active, orders, number, O)
        totals = np.full(len(self.members), np.nan)
        opts = self.optimizers
        starts = {k: self.members[k]._state(opts[k]) for k in active}
        try:
            for k in active:
                totals[k] = self.members[k]._run_epoch(self.data, self.scale, self.targets, orders[k],
                                                       self.batch_size, opts[k], self.weights)
        except BaseException:
            for k in active:
                self.members[k]._set_state(starts[k], opts[k])
            raise
        bad = [k for k in active if not np.isfinite(totals[k]) or not self.members[k]._params_finite()]
        for k in bad:
            self.members[k]._set_state(starts[k], opts[k])
            self.diverged[k] = number
        return totals, bad

    def _plan_epoch(self, active, orders, number, O=None):
        plan = self.plan
        plan.refresh()  # the hyperparameters: a callback may have changed them
        if O is None:
            O = np.zeros((len(self.members), self.n), dtype=np.int64)
            for k in active:
                O[k] = orders[k]
        start = plan.snapshot()
        try:
            totals = self.be.train_plan(plan, self.data, self.scale, self.targets, O, self.batch_size, active)
        except BaseException:
            plan.restore(start)
            plan.unpack(self.networks)
            raise
        self.stale = True
        ok = plan.finite()
        bad = [k for k in active if not (np.isfinite(totals[k]) and ok[k])]
        if bad:
            plan.restore(start, bad)
            for k in bad:
                self.diverged[k] = number
        batches = -(-self.n // self.batch_size)
        for k in active:
            if k not in bad:
                self.optimizers[k].t += batches  # the updates made (the plan read t as its step)
        return totals, bad

    def sync(self):
        """The layers up to date with the plan."""
        if self.plan is not None and self.stale:
            self.plan.unpack(self.networks)
            self.stale = False

    def repack(self):
        """The plan up to date with the layers (a callback may have changed them)."""
        if self.plan is not None and self.weights is None:
            fresh = self.be.remake_plan(self.plan, self.networks, self.loss, self.optimizers, self.data,
                                        self.targets, self.batch_size)
            if fresh is None:
                raise RuntimeError("the layers changed so that the training plan no longer covers them")
            self.plan = fresh


def fit(members, optimizers, X, y, epochs, batch_size, shuffle, validation_data, progress, callback,
        single, on_diverged=None, schedules=None, sample_weight=None):
    """Train ``members`` (Networks of one shape and backend); see the module doc. ``single``: the
    history holds one value per epoch (a lone network), else one list per epoch with a value per
    member. ``on_diverged(run, bad, epoch, history)``, when given, is called when members diverge
    (they are already put back and stopped). ``schedules``: one ``fastbp.schedules.Schedule`` per
    member (or None), which sets its optimiser's ``lr`` before each epoch, is told the epoch's
    loss after it, and ends the fit when every active member's is done. ``sample_weight``: per-sample
    weights (see ``Network.fit``). Returns the History."""
    from .network import History

    epochs = check_positive_int(epochs, "epochs")
    check_callback(callback)
    first = members[0]
    X, scale, Y, batch_size = check_fit_data(X, y, batch_size, validation_data, first.layers[0].n_in,
                                             first.layers[-1].n_out)
    weights = check_sample_weight(sample_weight, X.shape[0])
    for member, opt in zip(members, optimizers):
        member.optimizer = opt  # it owns the state the next fit goes on from
    run = Run(members, optimizers, X, scale, Y, batch_size, shuffle, weights)
    history = History(loss=[], val_loss=[], val_accuracy=[], seconds=[], lr=[])
    history["engine"] = run.engine
    history["input"] = run.inputs
    history["compile_seconds"] = run.warmup()
    if not single:
        history["diverged"] = run.diverged
    pick = (lambda values: values[0]) if single else list
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=f"fastbp[{run.be.name}]", unit="epoch")
    try:
        for epoch in range(epochs):
            if schedules is not None:
                for k in run.active():
                    optimizers[k].lr = schedules[k].rate(epoch, epoch * run.n)
            history["lr"].append(pick([opt.lr for opt in optimizers]))
            t0 = time.perf_counter()
            totals, bad = run.epoch(epoch + 1)
            history["seconds"].append(time.perf_counter() - t0)
            history["loss"].append(pick([float(t) / run.total for t in totals]))
            if schedules is not None:
                for k, schedule in enumerate(schedules):
                    if k not in run.diverged or k in bad:
                        schedule.observe(float(totals[k]) / run.total)
            if bad and on_diverged is not None:
                run.sync()
                on_diverged(run, bad, epoch, history)
            if validation_data is not None:
                run.sync()
                stopped = {"loss": float("nan"), "accuracy": float("nan")}  # diverged members: NaN
                scores = [stopped if k in run.diverged else m.evaluate(*validation_data)
                          for k, m in enumerate(members)]
                history["val_loss"].append(pick([s["loss"] for s in scores]))
                history["val_accuracy"].append(pick([s["accuracy"] for s in scores]))
            if bar is not None:
                postfix = {"loss": f"{np.nanmean(np.atleast_1d(history['loss'][-1])):.4f}"}
                if history["val_accuracy"]:
                    postfix["val_acc"] = f"{np.nanmean(np.atleast_1d(history['val_accuracy'][-1])):.4f}"
                bar.set_postfix(postfix)
                bar.update(1)
            if callback is not None:
                run.sync()
                stop = callback(epoch, history)
                run.repack()
                if stop:
                    break
            if not run.active():
                break
            if schedules is not None and all(schedules[k].done for k in run.active()):
                break  # an adaptive rate fell below its floor
    finally:
        run.sync()
        if bar is not None:
            bar.close()
    return history
