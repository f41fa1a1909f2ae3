"""The ``mc-engine`` command: a thin mirror of the Python API.

    mc-engine run STUDY [--out DIR] [--workers N | --scheduler ADDR | --scheduler-file FILE]
                  [--fresh] [--memory-limit SIZE] [--backend {numba,torch}]
                  [--device {cpu,cuda,cuda:N}]
    mc-engine validate STUDY [--memory-limit SIZE] [--backend ...] [--device ...]
    mc-engine summary RESULTS_DIR [--metric M]
    mc-engine report RESULTS_DIR [--out report.html | FILE.png|.pdf|.svg] [--metric M]
                     [--compare K=V[,K=V] K=V[,K=V]] [--format svg,pdf] [--size single|double]
    mc-engine compare RESULTS_DIR --baseline COLUMN=VALUE... --other COLUMN=VALUE... [--metric M]
    mc-engine train TRAIN [--out DIR] [--threads N] [--fresh] [--device {cpu,cuda,cuda:N}]

Exit status: 0 done, 2 invalid input (one line naming file and key, never a traceback), 1 any
other failure (one line and a hint), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM (what
was written is kept in both cases). Warnings are one line each.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from mc_engine import __version__, check_environment
from mc_engine.cli_results import results_commands, summary_table
from mc_engine.errors import UserInputError
from mc_engine.signals import STOP, Terminated, stop_signals

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
DEFAULT_OUT = Path("results")
#: Most torch threads ``train --threads`` takes per core (more only contend for the cores).
THREADS_PER_CORE = 4


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (status 2)
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    if args.handler is None:
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    try:
        check_environment()
        with warnings.catch_warnings():
            warnings.showwarning = _warning
            return args.handler(args)
    except BrokenPipeError:        # `mc-engine summary ... | head`: the reader left, quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except UserInputError as err:
        _error(str(err))
        return EXIT_INPUT
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        _error(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}; the trials written "
               f"so far are kept: run the same command again to resume")
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as err:
        if args.debug:
            raise
        from mc_engine.fileio import WriteFailed
        from mc_engine.run import RunError

        ours = isinstance(err, RunError | WriteFailed)   # messages of their own, with a hint
        hint = err.hint if ours and err.hint else "run again with --debug for the full traceback"
        message = str(err) if ours else f"{type(err).__name__}: {err}"
        _error(f"error: {message}")
        _error(f"hint: {hint}")
        return EXIT_FAILURE


def _error(message: str) -> None:
    print(" ".join(message.split("\n")), file=sys.stderr)


def _warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """Warnings (unreadable result files set aside or left out) as one line each."""
    _error(f"warning: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mc-engine", description="Monte Carlo accuracy studies of neural networks on "
                                      "analog in-memory-computing hardware.")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of unexpected errors")
    parser.add_argument("--version", action="version", version=f"mc-engine {__version__}")
    parser.set_defaults(handler=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int],
                text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    run = command("run", _run, "Run a study (resuming: trials already on disk are skipped).")
    run.add_argument("study", type=Path, help="study file (.toml)")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT,
                     help="results folder; the study writes <out>/<study name>/ "
                          "(default: results)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=None,
                       help="worker processes of the local cluster (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDR", default=None,
                       help="address of a running Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--scheduler-file", metavar="FILE", type=Path, default=None,
                       help="JSON file with the scheduler's address, as written by 'dask "
                            "scheduler --scheduler-file', dask-jobqueue or dask-mpi")
    run.add_argument("--fresh", action="store_true",
                     help="delete this study's earlier results and start over")
    _memory_option(run)
    _execution_options(run)

    validate = command("validate", _validate,
                       "Check a study file, its model and its data (and that they fit each other) "
                       "without running it.")
    validate.add_argument("study", type=Path, help="study file (.toml)")
    validate.add_argument("--out", type=Path, default=DEFAULT_OUT,
                          help="results folder whose .cache holds trained zoo models")
    _memory_option(validate)
    _execution_options(validate, "checked: the device must be there")

    results_commands(command)   # summary, report, compare (mc_engine.cli_results)

    train = command("train", _train, "Train a model from a train file (plain or hardware-aware) "
                                      "into a checkpoint a study can load.")
    train.add_argument("train", type=Path, help="train file (.toml)")
    train.add_argument("--out", type=Path, default=None,
                       help="folder of <name>.pt and <name>.json (default: the train file's "
                            "[train] out, relative to the train file, else results/checkpoints)")
    train.add_argument("--threads", type=_positive_int, default=1,
                       help="torch CPU threads (default 1: bitwise reproducible for a seed)")
    train.add_argument("--fresh", action="store_true",
                       help="replace an earlier checkpoint of this name in --out (without it, "
                            "an existing <name>.pt is never overwritten)")
    train.add_argument("--backend", default=None, metavar="{numba,torch}",
                       help="training runs on torch (numba is refused: it has no gradients)")
    train.add_argument("--device", default=None, metavar="{cpu,cuda,cuda:N}",
                       help="torch device of the model, the batches and the injected noise "
                            "(default: cuda when torch sees a GPU, else cpu)")
    return parser


def _memory_bytes(text: str) -> int:
    from dask.utils import parse_bytes

    try:
        value = parse_bytes(text)
    except (ValueError, TypeError):
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a memory size such as 2GB or 4GiB, got "
                                         f"{text!r}")
    return value


def _memory_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--memory-limit", type=_memory_bytes, default=None, metavar="SIZE",
                     help="memory of one worker (e.g. 4GB; default: the Dask workers' own "
                          "limit): trials whose rows do not depend on the image batch run in "
                          "batches that fit it, the others are warned about")


def _execution_options(sub: argparse.ArgumentParser, note: str = "") -> None:
    """--backend and --device: where the trials' analog pass runs (an execution option, not a
    physics parameter: it changes no point id or seed)."""
    sub.add_argument("--backend", default=None, metavar="{numba,torch}",
                     help="numba (the CPU kernels, the default on cpu) or torch (any torch "
                          "device; implied by --device cuda)" + (f"; {note}" if note else ""))
    sub.add_argument("--device", default=None, metavar="{cpu,cuda,cuda:N}",
                     help="where the trials run (default cpu); with cuda and no --scheduler, "
                          "one local worker per visible GPU (cuda:N: one on GPU N; --workers "
                          "K: K workers, the GPUs in turn); with --scheduler, the trials go "
                          "to workers started with --resources GPU=1. Rows record backend and "
                          "compute_device; results of another backend or device type are not "
                          "resumed")


def _run(args: argparse.Namespace) -> int:
    from mc_engine.analog.execution import Execution
    from mc_engine.results import load_results
    from mc_engine.run import run_study
    from mc_engine.run.cluster import scheduler_from_file
    from mc_engine.study import load_study

    execution = Execution.parse(args.backend, args.device)
    study = load_study(args.study)
    scheduler = args.scheduler
    with stop_signals():
        if args.scheduler_file is not None:
            scheduler = scheduler_from_file(args.scheduler_file)
        outcome = run_study(study, args.out, workers=args.workers, scheduler=scheduler,
                            fresh=args.fresh, execution=execution,
                            memory_limit=args.memory_limit)
        STOP.check()   # a stop whose exception was swallowed (in a finalizer) still stops
    print(summary_table(load_results(outcome.results_dir)))
    print(f"{outcome.n_trials} trials ({outcome.n_run} run now, {outcome.n_skipped} already on "
          f"disk) in {outcome.wall_s:.1f} s -> {outcome.results_dir}")
    return EXIT_OK


#: SIGTERM (a batch system's time limit, ``kill``) stops like Ctrl-C, both through a flag that
#: the run's collection loop checks (mc_engine.signals): a stop can never be swallowed.
_sigterm_as_interrupt = stop_signals


def _validate(args: argparse.Namespace) -> int:
    from mc_engine.analog.execution import Execution
    from mc_engine.fileio import check_path_fits, check_utf8_path
    from mc_engine.study import format_duration, load_study
    from mc_engine.zoo.models import ZOO_NAMES

    execution = Execution.parse(args.backend, args.device)
    execution.check_available()
    study = load_study(args.study)
    check_utf8_path(args.out, "--out")   # where a zoo model is cached: before it is trained
    longest = max(ZOO_NAMES, key=len)
    check_path_fits(args.out / ".cache" / f".{longest}.pt.{'9' * 7}.tmp", "--out")
    inputs = study.load(args.out / ".cache")
    study, dataset = study.with_layers(inputs.model), inputs.dataset
    times = ", ".join(format_duration(t) for t in study.inference_times_s)
    layers = f" x {len(study.layers) + 1} (all layers analog, then each of " \
             f"{', '.join(study.layers)} alone)" if study.layers else ""
    if study.target_ci is None:
        repeats, trials = f"{study.repeats} repeats", f"{study.n_trials} trials"
    else:  # adaptive: from the first round alone up to max_repeats everywhere
        repeats = f"{study.repeats} to {study.max_repeats} repeats (until the 95 % interval " \
                  f"half-width is at most {study.target_ci:g})"
        trials = f"{study.n_trials} to {study.n_trials // study.repeats * study.max_repeats} " \
                 f"trials"
    n_ckpt, n_hw = len(study.checkpoint_labels), len(set(study.points))
    points = f"{n_hw} hardware point{'s' if n_hw != 1 else ''}" + \
        (f" x {n_ckpt} checkpoints ({len(study.points)} combinations)" if n_ckpt else "")
    print(f"{study.source}: ok: {points}{layers} x {repeats} = "
          f"{trials}, each at {len(study.inference_times_s)} inference "
          f"times ({times}) on {len(dataset)} samples of {dataset.name}, {execution}")
    if study.preset:    # the point the preset and the keys beside it resolve to
        print(f"[hardware] preset {study.preset!r} resolves to: "
              + ", ".join(f"{k} = {v!r}" for k, v in study.hardware.items()))
    from mc_engine.run.estimate import memory_note, probe_inputs

    estimate = probe_inputs(study, inputs, execution)
    n_trials = study.n_trials if study.target_ci is None else \
        study.n_trials // study.repeats * study.max_repeats
    print(estimate.line(n_trials, len(study.inference_times_s)))
    if args.memory_limit is not None:
        print(memory_note(study, estimate, args.memory_limit))
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from mc_engine.train import train
    from mc_engine.train.sweep import check_points_free, load_points

    device = _train_device(args.backend, args.device)
    points = load_points(args.train)   # one, or one per point of a recipe [sweep]
    cores = os.cpu_count() or 1
    if args.threads > THREADS_PER_CORE * cores:
        raise UserInputError(f"expected at most {THREADS_PER_CORE * cores} torch threads "
                             f"({THREADS_PER_CORE} per core, {cores} cores here), got "
                             f"{args.threads}", source="--threads")
    # A path on the command line is relative to where it is typed, one in a file to the file.
    def out_of(spec) -> Path:
        return args.out if args.out is not None else \
            spec.out if spec.out is not None else DEFAULT_OUT / "checkpoints"

    if len(points) > 1:
        for spec in points:
            check_points_free([spec], out_of(spec), args.fresh)
    written = []
    for spec in points:
        with stop_signals():
            outcome = train(spec, out_of(spec), threads=args.threads, fresh=args.fresh,
                            device=device)
        stopped = EXIT_TERMINATED if outcome.terminated else EXIT_INTERRUPTED
        if outcome.checkpoint is None:
            _error(f"{'terminated (SIGTERM)' if outcome.terminated else 'interrupted'} before "
                   f"the first epoch of {spec.name} completed; nothing written for it")
            return stopped
        print(f"{outcome.checkpoint} ({outcome.epochs_done} of {spec.epochs} epochs, held-out "
              f"accuracy {outcome.held_out_accuracy:.4f}, {outcome.wall_s:.1f} s; recipe and "
              f"accuracies in {outcome.sidecar})")
        if outcome.interrupted:
            _error(f"{'terminated (SIGTERM)' if outcome.terminated else 'interrupted'}: "
                   f"{outcome.checkpoint} holds the last completed epoch "
                   f"({outcome.epochs_done})")
            return stopped
        written.append(outcome.checkpoint)
    if len(points) > 1:
        print(f"{len(written)} checkpoints, one per sweep point:")
        for path in written:
            print(f"  {path}")
    return EXIT_OK


def _train_device(backend: str | None, device: str | None) -> str | None:
    """The torch device of ``mc-engine train --backend B --device D`` (None: not given, the
    training's own choice); training runs on torch, so ``--backend numba`` is refused."""
    if backend == "numba":
        raise UserInputError("training runs on torch (its forward pass is differentiable); "
                             "the numba backend is for 'mc-engine run': leave --backend out or "
                             "give --backend torch", key="--backend")
    if device is None:
        return None
    from mc_engine.analog.execution import Execution

    execution = Execution.parse("torch", device)
    execution.check_available()
    return execution.device


if __name__ == "__main__":
    sys.exit(main())
