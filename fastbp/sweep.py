"""Hyperparameter sweeps as packs: each task trains one ``fb.Ensemble``, not one network.

A configuration is a dict of per-member hyperparameters, any of ``lr`` (default 0.1),
``momentum`` (0.0), ``weight_decay`` (0.0), ``seed`` (0: the same initial weights and epoch
orders for every configuration that gives none) and ``sizes`` (the layer sizes; default: the
``sizes`` argument of ``train_pack``). ``packs(configs, size)`` splits a list of them into packs
of at most ``size`` configurations of one shape; ``train_pack(pack, X, y, sizes, epochs, ...)``
trains a pack as one ensemble and returns one result per configuration, in order::

    {"config": the configuration, "loss": the last epoch's training loss,
     "val_loss", "val_accuracy": after the last epoch (None without validation_data),
     "params": the trained network's get_params(), "diverged": the epoch (from 1) or None,
     "history": {"loss": [...], "val_loss": [...], "val_accuracy": [...]} (one value per epoch)}

Each result's network equals the lone ``fb.Network.from_sizes(sizes, seed=config["seed"], ...)``
trained by ``fit`` with the configuration's lr, momentum and weight_decay. A member that
diverges stops at its weights before that epoch (its later losses are NaN); the others train on.
On a Dask cluster, one task per pack, the data scattered to the workers once (arrays passed to
``map`` itself go into the task graph; distributed 2026.8 fails on ``map`` keywords over 100 kB)::

    from fastbp.sweep import packs, train_pack
    X_, y_ = client.scatter([X, y], broadcast=True)
    futures = client.map(train_pack, packs(configs, 8), X=X_, y=y_, sizes=[64, 32, 10], epochs=10)
    results = [r for pack in client.gather(futures) for r in pack]

Inputs are checked before anything trains (``packs`` checks the configurations too, so a bad
sweep fails on the client, not on the workers); errors name the argument (``configs[3]: ...``).
"""
from __future__ import annotations

from collections.abc import Mapping

from ._validation import check_positive_int, check_seed
from .ensemble import Ensemble
from .optim import SGD

__all__ = ["packs", "train_pack", "KEYS"]

KEYS = ("lr", "momentum", "weight_decay", "seed", "sizes")
DEFAULTS = {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "seed": 0}


def _check_configs(configs):
    """The configurations as a list of dicts, each checked: known keys and valid values."""
    if isinstance(configs, (Mapping, str, bytes)) or not hasattr(configs, "__iter__"):
        raise TypeError(f"configs: expected a list of dicts (one per configuration), got "
                        f"{type(configs).__name__}" + (" (one configuration: pass [config])"
                                                       if isinstance(configs, Mapping) else ""))
    configs = list(configs)
    if not configs:
        raise ValueError("configs: expected at least one configuration, got an empty list")
    for i, c in enumerate(configs):
        if not isinstance(c, Mapping):
            raise TypeError(f"configs[{i}]: expected a dict such as {{'lr': 0.5, 'seed': 0}}, got {c!r:.80}")
        unknown = [k for k in c if k not in KEYS]
        if unknown:
            raise ValueError(f"configs[{i}]: unknown key{'s' * (len(unknown) > 1)} "
                             f"{', '.join(map(repr, unknown))}; expected some of {', '.join(KEYS)}")
        c = {**DEFAULTS, **c}
        try:
            SGD(c["lr"], c["momentum"], c["weight_decay"])
            check_seed(c["seed"])
            if "sizes" in c and (isinstance(c["sizes"], (str, bytes)) or not hasattr(c["sizes"], "__iter__")):
                raise TypeError(f"sizes: expected a list of layer sizes, got {c['sizes']!r}")
        except (TypeError, ValueError) as e:
            raise type(e)(f"configs[{i}]: {e}") from None
    return configs


def _shape(config, sizes=None):
    s = config.get("sizes", sizes)
    return None if s is None else tuple(s)


def packs(configs, size):
    """``configs`` in packs of at most ``size``, in order; configurations of different ``sizes``
    go to different packs (each pack is one network shape)."""
    configs = _check_configs(configs)
    size = check_positive_int(size, "size")
    groups = {}
    for c in configs:
        groups.setdefault(_shape(c), []).append(c)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


def train_pack(configs, X, y, sizes=None, epochs=1, batch_size=10, validation_data=None, activation="sigmoid",
               output_activation=None, loss="quadratic", init="scaled_normal", backend="auto", dtype=None):
    """Train ``configs`` (one network shape) as one ensemble; one result per configuration (see
    the module doc). ``sizes``: the layer sizes, unless every configuration gives its own."""
    configs = _check_configs(configs)
    shape = _shape(configs[0], sizes)
    if shape is None:
        raise ValueError("sizes: expected the layer sizes (e.g. [64, 32, 10]), as an argument or in every "
                         "configuration, got none")
    for i, c in enumerate(configs):
        if _shape(c, sizes) != shape:
            raise ValueError(f"configs[{i}]: sizes {list(_shape(c, sizes))} differ from configs[0]'s "
                             f"{list(shape)}; a pack trains one network shape (packs() groups by shape)")
    full = [{**DEFAULTS, **c} for c in configs]
    ens = Ensemble.from_sizes(list(shape), n_models=len(full), seeds=[c["seed"] for c in full],
                              activation=activation, output_activation=output_activation, loss=loss, init=init,
                              backend=backend, dtype=dtype)
    h = ens.fit(X, y, epochs=epochs, batch_size=batch_size, lr=[c["lr"] for c in full],
                momentum=[c["momentum"] for c in full], weight_decay=[c["weight_decay"] for c in full],
                validation_data=validation_data)
    results = []
    for k, (config, member) in enumerate(zip(configs, ens)):
        own = {key: [epoch[k] for epoch in h[key]] for key in ("loss", "val_loss", "val_accuracy")}
        results.append({"config": dict(config), "loss": own["loss"][-1],
                        "val_loss": own["val_loss"][-1] if own["val_loss"] else None,
                        "val_accuracy": own["val_accuracy"][-1] if own["val_accuracy"] else None,
                        "params": member.get_params(), "diverged": h["diverged"].get(k), "history": own})
    return results
