"""The command line: ``fastbp train`` (the book's run by default), ``fastbp examples``, ``fastbp info``."""
from __future__ import annotations

import argparse
import os
import statistics
import sys

from ._io import check_output
from ._validation import check_nonneg_float, check_positive_float, check_positive_int


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, instead of argparse's usage block
        # "argument --seed: ..." -> "--seed: ...", the form of every other error the CLI gives
        self.exit(2, f"fastbp: error: {message.removeprefix('argument ')}\n")


# Every option's value is checked here, as argparse reads it (before any data loads), by the rules
# the API applies to the same argument; the messages leave out the name, which argparse puts first.
def _checked(parse, check, **options):
    """An argparse ``type``: ``parse(text)`` checked by one of fastbp's checkers."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            value = text  # the checker says what was expected, and shows the text
        try:
            return check(value, "", **options)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(": ")) from None
    return convert


_positive_int = _checked(int, check_positive_int)
_positive_float = _checked(float, check_positive_float)
_nonneg_float = _checked(float, check_nonneg_float)
_momentum = _checked(float, check_nonneg_float, upper=1.0)


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _int_list(minimum, hint=""):
    """An argparse ``type``: at least ``minimum`` comma-separated positive integers."""
    def parse(text):
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if any(v <= 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
        if len(values) < minimum:
            raise argparse.ArgumentTypeError(f"expected at least {minimum} comma-separated positive "
                                             f"integer{'s' if minimum > 1 else ''}{hint}, got {text!r}")
        return values
    return parse


def _folder(text):
    """An argparse ``type``: an existing folder."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got ''")
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"folder {text} does not exist")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return text


def _check_save(path, option="--save"):
    """``--save PATH`` (and the other output files): checked before any data loads, so that a run
    is not lost at the end."""
    check_output(path, option)


def _one_line(error):
    """An error's message on one line (some, like a dataset that is not found, have several)."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def build_parser():
    from .kernels import ACTIVATIONS, BACKENDS, LOSSES
    from .layers import INITS

    parser = _Parser(prog="fastbp", description="Train multilayer perceptrons by backpropagation, fast.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a network (default: the book's MNIST run)",
                           description="Train a network. Defaults are the book's run: MNIST, 784-30-10 "
                                       "sigmoid, quadratic loss, batch 10, lr 3.0, 30 epochs.")
    train.add_argument("--dataset", default=None,
                       help="mnist, fashion-mnist, digits, moons, or a folder of four IDX files "
                            "(default: mnist when available, else fashion-mnist, else digits)")
    train.add_argument("--data-dir", type=_folder, default=None, help="folder to look for the dataset's files first")
    train.add_argument("--hidden", type=_int_list(1, " (no hidden layer: --sizes, e.g. 64,10)"), default=[30],
                       help="hidden layer sizes, e.g. 100,30 (default 30)")
    train.add_argument("--sizes", type=_int_list(2), default=None,
                       help="all layer sizes, e.g. 784,30,10 (overrides --hidden; must fit the data)")
    train.add_argument("--activation", default="sigmoid", choices=ACTIVATIONS)
    train.add_argument("--output-activation", default=None, choices=ACTIVATIONS,
                       help="default: softmax with --loss cross_entropy, else --activation")
    train.add_argument("--loss", default="quadratic", choices=LOSSES)
    train.add_argument("--init", default="scaled_normal", choices=INITS,
                       help="weight initialisation: scaled_normal N(0, 1/n_in) (default, the book's improved "
                            "one from network2.py) or normal N(0, 1) as in network.py, xavier, he")
    train.add_argument("--epochs", type=_positive_int, default=30)
    train.add_argument("--batch-size", type=_positive_int, default=10)
    train.add_argument("--lr", type=_positive_float, default=3.0)
    train.add_argument("--momentum", type=_momentum, default=0.0, help="in [0, 1)")
    train.add_argument("--weight-decay", type=_nonneg_float, default=0.0)
    train.add_argument("--backend", default="auto", choices=BACKENDS)
    train.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    train.add_argument("--threads", type=int, default=None, choices=(1, 2),
                       help="numba backend: 1 (default) or 2 worker threads for the fused epoch")
    train.add_argument("--sparse", default=None, choices=("auto", "on", "off"),
                       help="numba backend: the first layer over each sample's nonzero inputs only (on), "
                            "dense (off), or by the data's density (auto, the default)")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--no-download", action="store_true", help="never try to download data")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--save", default=None, metavar="PATH", help="save the trained network (.npz)")
    train.add_argument("--plot", default=None, metavar="PATH",
                       help="write training curves (loss, validation accuracy per epoch) as a PNG (needs the plot extra)")
    train.add_argument("--history", default=None, metavar="PATH", help="write the training history as JSON")

    examples = sub.add_parser("examples", help="list the worked examples, or run one by name")
    examples.add_argument("name", nargs="?", help="the example to run (omit to list them)")
    examples.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the example")

    sub.add_parser("info", help="versions and available backends")
    sub.add_parser("bench", help="side-by-side training speed of every engine here (fastbp bench --help)",
                   add_help=False)
    return parser


def _choose_dataset(args, say):
    """The dataset to train on: the one named, else MNIST if available, else a stated fallback."""
    from . import datasets

    if args.dataset is not None:
        return datasets.load_dataset(args.dataset, data_dir=args.data_dir, download=not args.no_download)
    try:
        return datasets.load_mnist(data_dir=args.data_dir, download=not args.no_download)
    except datasets.DataError as e:
        reason = str(e).splitlines()[0]
    try:
        data = datasets.load_fashion_mnist(data_dir=args.data_dir, download=False)
        say(f"MNIST is not available ({reason}); using Fashion-MNIST instead.")
    except datasets.DataError:
        data = datasets.load_digits()
        say(f"MNIST is not available ({reason}); Fashion-MNIST is not installed either; "
            f"using scikit-learn's 8x8 digits instead.")
    return data


def _threads(net):
    threads = getattr(net.backend, "threads", None)
    return f", {threads} threads" if net.backend.name == "numba" and threads == 2 else ""


def train(args, out=print):
    import fastbp as fb

    # everything that does not need the data is checked before it loads
    _check_save(args.save)
    _check_save(args.history, "--history")
    _check_save(args.plot, "--plot")
    if args.plot is not None:
        from .plots import require_matplotlib

        require_matplotlib()
    outputs = [p for p in (args.save, args.history, args.plot) if p]
    if len(set(map(os.path.abspath, outputs))) != len(outputs):
        raise ValueError("--save, --history and --plot: expected different files")
    options = {}
    if args.threads is not None:
        if fb.kernels.resolve(args.backend) != "numba":
            raise ValueError(f"--threads: applies to the numba backend, but --backend {args.backend} "
                             f"is {fb.kernels.resolve(args.backend)!r} here")
        options["threads"] = args.threads
    if args.sparse is not None:
        if fb.kernels.resolve(args.backend) != "numba":
            raise ValueError(f"--sparse: applies to the numba backend, but --backend {args.backend} "
                             f"is {fb.kernels.resolve(args.backend)!r} here")
        options["sparse"] = {"auto": "auto", "on": True, "off": False}[args.sparse]
    backend = fb.kernels.get_backend(args.backend, args.dtype, **options)

    data = _choose_dataset(args, out)
    X, y, Xt, yt = data.X_train, data.y_train, data.X_test, data.y_test
    n_classes = int(max(y.max(), yt.max())) + 1
    sizes = args.sizes or [X.shape[1], *args.hidden, n_classes]
    if sizes[0] != X.shape[1] or sizes[-1] != n_classes:
        raise ValueError(f"--sizes: {data.name} needs {X.shape[1]} inputs and {n_classes} outputs, got "
                         f"{','.join(map(str, sizes))}")
    out_act = args.output_activation or ("softmax" if args.loss == "cross_entropy" else args.activation)
    net = fb.Network.from_sizes(sizes, activation=args.activation, output_activation=out_act, loss=args.loss,
                                init=args.init, backend=backend, dtype=args.dtype, seed=args.seed)
    out(f"training {'-'.join(map(str, sizes))} {args.activation} on {data.name} ({len(X)} train, {len(Xt)} test), "
        f"loss {args.loss}, batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs, "
        f"backend {net.backend.name} ({net.dtype.name}{_threads(net)})")
    history = net.fit(X, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, validation_data=(Xt, yt), progress=not args.no_progress)
    seconds = statistics.median(history.seconds)
    out(f"test accuracy {history.val_accuracy[-1]:.4f}, test loss {history.val_loss[-1]:.4f}, "
        f"{seconds:.4f} s/epoch (median of {len(history.seconds)}), compile {history.compile_seconds:.2f} s, "
        f"backend {net.backend.name} ({net.dtype.name}{_threads(net)}), engine {history.engine}")
    if args.save is not None:
        net.save(args.save)
        out(f"saved to {args.save}")
    if args.history is not None:
        history.to_json(args.history)
        out(f"history written to {args.history}")
    if args.plot is not None:
        history.plot(args.plot, title=f"fastbp {'-'.join(map(str, sizes))} {args.activation} on {data.name}, "
                                      f"engine {history.engine}")
        out(f"training curves written to {args.plot}")
    return history


def info(out=print):
    import platform

    import numpy

    import fastbp as fb
    from . import kernels

    out(f"fastbp {fb.__version__}, Python {platform.python_version()}, NumPy {numpy.__version__}")
    for name in kernels.REGISTRY:
        out(f"backend {name:6s}: {'available' if kernels.available(name) else 'not available'}")
    out(f"backend 'auto' resolves to: {kernels.resolve('auto')}")
    if kernels.available("numba"):
        cache = kernels.backend_class("numba").info()
        out(f"numba kernel cache: {cache['cache_dir']} ({cache['cache_files']} files, "
            f"{cache['cache_bytes'] / 1e6:.1f} MB)")
        out(f"numba first compile: {cache['first_compile']}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":  # its own options (the same program as scripts/bench.py)
        from .bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    from .datasets import DataError
    from .kernels import BackendUnavailable
    from .network import DivergenceError

    try:
        if args.command == "train":
            train(args)
        elif args.command == "info":
            info()
        else:
            from . import examples

            if args.name is None:
                for name, description in examples.list_examples():
                    print(f"{name:16s} {description}")
            else:
                return examples.run(args.name, args.args) or 0
    except (DataError, BackendUnavailable, DivergenceError, ValueError, OSError) as e:
        print(f"fastbp: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
