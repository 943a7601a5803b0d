"""The error convention of every command line entry point: one line, a documented exit status, no traceback.

Library code raises typed errors whose messages start with the file or argument at fault; only the `__main__`
wrappers, through `run_cli`, turn them into one line on stderr, ``<prog>: <file or argument>: <reason>``:

- exit 0: success;
- exit 1: bad input (a file that cannot be used, a refused pickle, a too-quiet clip) or a failure while running;
- exit 2: a usage error (unknown or missing arguments, arguments that contradict each other);
- exit 130: interrupted (Ctrl-C).

``--debug`` (or the environment variable ``AIARTIST_DEBUG=1``, the one switch for the LightningCLI entry points,
which parse their own arguments) prints the full traceback as well. Warnings are shown as one line,
``<prog>: warning: <first line of the message>``. Library messages spell options as Python arguments
(``trust_pickle=True``); each command passes how it spells them (``--trust-pickle``), and an option the command does
not offer is left out.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

DEBUG_ENV = "AIARTIST_DEBUG"
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# Library spelling -> the sentence that offers it, dropped when a command has no such option.
OFFERS = {
    "trust_pickle=True": r"\s*If you trust this file, pass trust_pickle=True\.",
    "allow_silence=True": r"\s*\(pass allow_silence=True to edit anyway\)",
}
_PLAIN = (ValueError, OSError, RuntimeError, ImportError)  # whose messages already say what went wrong


class UsageError(ValueError):
    """Arguments that cannot work together (exit status 2)."""


def add_debug_flag(parser: Any) -> None:
    """Document --debug on an argparse parser (run_cli reads it)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"on errors, print the full traceback (also: {DEBUG_ENV}=1)")


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def error_line(err: BaseException, spellings: dict[str, str] | None = None) -> str:
    """The one-line message for `err`: its text (type name added when the text alone would not say what failed),
    with each library option spelled as the command spells it (or dropped when the command lacks it)."""
    text = str(err).strip() or type(err).__name__
    if not isinstance(err, _PLAIN):
        text = f"{type(err).__name__}: {text}"
    for python_spelling, offer in OFFERS.items():
        if (spellings or {}).get(python_spelling):
            text = text.replace(python_spelling, spellings[python_spelling])
        else:
            text = re.sub(offer, "", text)
    return text


@contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Show warnings as '<prog>: warning: <message>' (no source line) while the command runs.

    Deprecation notices are for the developers of the libraries we call, not for the person running a command:
    Python hides them outside ``__main__``, and they stay hidden here even where a test runner turned them on."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        first = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        print(f"{prog}: warning: {first}", file=file or sys.stderr)

    with warnings.catch_warnings():  # restores the filters and showwarning afterwards
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.showwarning = show
        yield


def run_cli(main: Callable[[list[str]], Any], prog: str, argv: Sequence[str] | None = None,
            spellings: dict[str, str] | None = None, strip_debug: bool = False) -> int:
    """Run ``main(argv)`` under the convention above and return the exit status.

    `spellings` maps library option spellings to this command's (e.g. {"trust_pickle=True": "--trust-pickle"});
    `strip_debug` removes --debug from argv for parsers that do not declare it (LightningCLI).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    if strip_debug:
        argv = [a for a in argv if a != "--debug"]
    try:
        if debug:
            result = main(argv)
        else:
            with one_line_warnings(prog):
                result = main(argv)
    except SystemExit as stop:  # argparse/jsonargparse usage errors (2) keep their status and message
        if stop.code is None or isinstance(stop.code, int):
            return int(stop.code or 0)
        print(f"{prog}: {stop.code}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the one place where any failure becomes a line and a status
        if debug:
            traceback.print_exc()
        print(f"{prog}: {error_line(err, spellings)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, UsageError) else EXIT_FAILURE
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
