"""Helpers shared by the console scripts: argument parsing that raises, and a main
wrapper that maps failures to exit codes and the termination log."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from mlplane_runtime.errors import EXIT_INTERNAL, RuntimeFailure, UserError
from mlplane_runtime.termination import write_error


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UserErrors (exit code 2, termination log)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def env_default(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


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
