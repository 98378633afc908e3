"""The ``eventspine`` command.

Commands::

    eventspine run TARGET [--metrics-port N] [--state-dir D] [--max-seconds S]
                          [--progress | --no-progress] [--quiet] [--debug]
    eventspine demo [--events N] [--out DIR] [...the run options]
    eventspine topics create|list|describe ..., produce, tail, state show|reset ...,
    eventspine dead-letters list|replay ...   (the durable log: docs/cli.md)
    eventspine --version

``TARGET`` is ``path/to/file.py:attr`` or ``package.module:attr``; ``attr`` is
an ``es.Pipeline`` or a function taking no arguments that returns one.

Exit codes:

* ``0``: the run finished (its inputs ended, or ``--max-seconds`` passed).
* ``1``: the pipeline failed while running (``StepError``, ``DecodeError``,
  ``SourceError``, ``SinkError`` or another eventspine error), or an
  unexpected internal error (printed with its traceback).
* ``2``: a usage, configuration or definition error (bad option, bad
  setting, the target cannot be found or is not a pipeline, invalid pipeline).
* ``130`` / ``143``: stopped by SIGINT / SIGTERM (``128 + signal``) after a
  clean stop: sinks flushed and closed.

Errors are printed as one paragraph starting with ``error:``; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import faulthandler
import logging
import shutil
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from eventspine._version import __version__
from eventspine.errors import ConfigError, DefinitionError, EventspineError
from eventspine.settings import Settings

from . import state as state_cli
from . import topics as topics_cli
from .run import EXIT_FAILED, EXIT_USAGE, ForcedStop, RunRequest, Signals, execute
from .target import load_pipeline

__all__ = ["main"]

_REPORT = "https://github.com/eventspine/eventspine/issues"


class _UsageError(Exception):
    """argparse found a bad command line (its message is already user-facing)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message}; see '{self.prog} --help'")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="eventspine",
        description="Run eventspine pipelines: event time, windows, joins, in plain Python.",
    )
    p.add_argument("--version", action="version", version=f"eventspine {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run a pipeline until its inputs end or it is stopped")
    run.add_argument("target", metavar="TARGET", help="path/to/file.py:attr or package.module:attr")
    _run_options(run)
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes that share the pipeline's tasks (topic sources only)",
    )
    run.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument(
        "--stall-timeout-s",
        type=float,
        default=120.0,
        metavar="S",
        help="a worker whose loop is stuck this long exits with code 75 for a supervisor to "
        "restart (120; 0: never)",
    )
    run.add_argument(
        "--at-least-once",
        action="store_true",
        help="commit outputs and positions without a transaction (faster on Kafka; a crash "
        "replays, so outputs may repeat)",
    )
    run.add_argument(
        "--standby",
        action="store_true",
        help="on Kafka, keep warm copies of the state of the tasks other workers own, so a "
        "task restores fast when it moves here (costs memory: each worker holds all state)",
    )

    demo = sub.add_parser("demo", help="run the market-ticks demo (bars, VWAP, spikes, sectors)")
    demo.add_argument("--events", type=int, default=1_000_000, help="ticks to generate (1,000,000)")
    demo.add_argument("--out", default="./demo-out", help="output directory (./demo-out)")
    _run_options(demo)
    topics_cli.register(sub)
    state_cli.register(sub)
    return p


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", metavar="N", help="serve Prometheus metrics on 127.0.0.1:N")
    p.add_argument("--state-dir", metavar="D", help="state directory (./.eventspine)")
    p.add_argument(
        "--log-url", metavar="URL", help="durable log URL (default: log.db in the state dir)"
    )
    p.add_argument(
        "--checkpoint-interval-ms", metavar="N", help="longest time between checkpoints (1000)"
    )
    p.add_argument("--latency-budget-ms", metavar="N", help="target time per micro-batch (20)")
    p.add_argument("--flush-interval-ms", metavar="N", help="sink flush interval (1000)")
    p.add_argument("--log-level", metavar="L", help="DEBUG, INFO, WARNING (default), ERROR")
    p.add_argument("--max-seconds", metavar="S", type=float, help="stop after S seconds (exit 0)")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show the progress line even when stderr is not a terminal",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show the progress line"
    )
    p.add_argument("--quiet", action="store_true", help="print no progress and no summary")
    p.add_argument("--debug", action="store_true", help="show tracebacks with errors")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``eventspine`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    err = sys.stderr
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    with contextlib.suppress(AttributeError, ValueError, OSError):  # no SIGUSR1, or a thread
        # `kill -USR1 <pid>` prints every thread's stack: where is a stuck run waiting?
        faulthandler.register(signal.SIGUSR1, file=err, all_threads=True)
    signals = Signals()
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help and --version print and exit here
            return int(exc.code or 0)
        if args.command is None:
            _parser().print_help(err)
            return EXIT_USAGE
        with signals.installed():
            return _command(args, signals, err)
    except ForcedStop as exc:
        name = signal.Signals(exc.signum).name
        err.write(f"\nstopped by {name} before the run could stop cleanly\n")
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside the handlers (e.g. while importing eventspine)
        err.write("\nstopped by SIGINT\n")
        return 130
    except _UsageError as exc:
        return _fail(err, str(exc), exc, EXIT_USAGE, debug)
    except (ConfigError, DefinitionError) as exc:
        return _fail(err, str(exc), exc, EXIT_USAGE, debug)
    except EventspineError as exc:
        return _fail(err, str(exc), exc, EXIT_FAILED, debug)
    except Exception as exc:
        traceback.print_exception(exc, file=err)
        err.write(
            f"error: unexpected {type(exc).__name__}: {exc}. This is a bug in eventspine or in a "
            f"source, sink or library it called; please report it with the traceback above "
            f"at {_REPORT}\n"
        )
        return EXIT_FAILED


def _command(args: argparse.Namespace, signals: Signals, err: TextIO) -> int:
    if getattr(args, "verb", None) is not None:  # the log verbs: cli/topics.py, cli/state.py
        return int(args.verb(args))
    settings = Settings.load(
        {
            "metrics_port": args.metrics_port,
            "state_dir": args.state_dir,
            "log_url": args.log_url,
            "checkpoint_interval_ms": args.checkpoint_interval_ms,
            "latency_budget_ms": args.latency_budget_ms,
            "flush_interval_ms": args.flush_interval_ms,
            "log_level": args.log_level,
        }
    )
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise ConfigError(
            f"--max-seconds {args.max_seconds:g} is invalid; expected a number of seconds > 0"
        )
    req = RunRequest(
        settings, max_seconds=args.max_seconds, progress=args.progress, quiet=args.quiet
    )
    if args.command == "run":
        if args.workers < 1:
            raise ConfigError(f"--workers {args.workers} is invalid; expected a number >= 1")
        if args.workers > 1 and args.worker_index is None:
            from .workers import run_workers

            return run_workers(args.workers, signals, err)
        req = dataclasses.replace(
            req,
            worker=args.worker_index or 0,
            workers=args.workers,
            exactly_once=not args.at_least_once,
            stall_timeout_s=args.stall_timeout_s or None,
            standby=args.standby,
        )
        pipeline = load_pipeline(args.target)
        code, _result = execute(pipeline, req, signals, err)
        return code
    from .demo import build_demo, describe_outputs

    if args.events < 1:
        raise ConfigError(f"--events {args.events} is invalid; expected a whole number >= 1")
    pipeline = build_demo(args.events, args.out)
    # The demo is a showcase: every run starts fresh, with its state beside its outputs.
    state = Path(args.out) / ".state"
    shutil.rmtree(state, ignore_errors=True)
    demo_settings = dataclasses.replace(settings, state_dir=str(state), log_url=None)
    req = dataclasses.replace(req, settings=demo_settings)
    code, result = execute(pipeline, req, signals, err)
    if not args.quiet:
        sys.stdout.write(describe_outputs(args.out, result))
        sys.stdout.flush()
    return code


def _fail(err: TextIO, message: str, exc: BaseException, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc, file=err)
    err.write(f"error: {message}\n")
    err.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
