"""Helpers shared by the console scripts: argument parsing that raises, and a main
wrapper that maps failures to exit codes and the termination log."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from mlplane_runtime.errors import EXIT_INTERNAL, RuntimeFailure, UserError
from mlplane_runtime.httpserver import Limits, new_event_loop
from mlplane_runtime.termination import write_error

# The flags of httpserver.Limits: (flag, field, smallest allowed value, help).
_LIMIT_FLAGS: tuple[tuple[str, str, float, str], ...] = (
    ("--max-body-bytes", "max_body_bytes", 1024, "largest request body; larger: 413"),
    (
        "--max-header-bytes",
        "max_header_bytes",
        1024,
        "largest request line plus headers (and chunked trailers); larger: 431, closed",
    ),
    ("--header-timeout", "header_timeout", 0.01, "seconds for a request head; slower: 408"),
    ("--body-timeout", "body_timeout", 0.01, "seconds for a body after its head; slower: 408"),
    ("--idle-timeout", "idle_timeout", 0.01, "seconds a keep-alive connection may idle"),
    ("--send-timeout", "send_timeout", 0.01, "seconds a client may leave a response unread"),
    ("--max-connections", "max_connections", 1, "connections at once; more: 503, closed"),
    (
        "--max-buffered-bytes",
        "max_buffered_bytes",
        1024,
        "body bytes held at once over all connections, for bodies over the head limit; "
        "more: 503, closed",
    ),
)


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UserErrors (exit code 2, termination log)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def env_default(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of httpserver.Limits, each with an env var (`--max-body-bytes` reads
    MLPLANE_MAX_BODY_BYTES) and the Limits default."""
    defaults = Limits()
    for flag, field, _, help_text in _LIMIT_FLAGS:
        default = getattr(defaults, field)
        parser.add_argument(
            flag,
            type=type(default),
            default=type(default)(
                env_default("MLPLANE_" + flag[2:].upper().replace("-", "_"), str(default))
            ),
            help=f"{help_text} (default {default})",
        )


def limits_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Limits:
    """The Limits the flags ask for; a value below its minimum is a usage error."""
    for flag, field, smallest, _ in _LIMIT_FLAGS:
        if getattr(args, field) < smallest:
            parser.error(f"{flag} must be >= {smallest:g}")
    if args.max_buffered_bytes < args.max_body_bytes:
        parser.error("--max-buffered-bytes must be >= --max-body-bytes")
    return Limits(**{field: getattr(args, field) for _, field, _, _ in _LIMIT_FLAGS})


def run_main(body: Callable[[], int], report_errors: bool = True) -> int:
    """Run `body`; a RuntimeFailure becomes its exit code and an error report."""
    try:
        return int(body())
    except RuntimeFailure as exc:
        if report_errors:
            write_error(str(exc), exc.reason)
        else:
            print(f"error ({exc.reason}): {exc}", file=sys.stderr, flush=True)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        traceback.print_exc()
        if report_errors:
            write_error(f"internal error: {type(exc).__name__}: {exc}", "InternalError")
        return int(EXIT_INTERNAL)


def run_server_main(
    parse: Callable[[list[str]], argparse.Namespace],
    serve: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    argv: list[str] | None,
) -> int:
    """The main of a long-running server (mlplane-serve, mlplane-monitor): log to
    stderr, parse the arguments, run `serve` on a fresh event loop, map failures to exit
    codes."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def body() -> int:
        args = parse(sys.argv[1:] if argv is None else argv)
        loop = new_event_loop()
        try:
            return int(loop.run_until_complete(serve(args)))
        finally:
            loop.close()

    return run_main(body)
