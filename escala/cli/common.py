"""What every subcommand shares: a parser whose errors are one line, and flags built from dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, NoReturn

from escala.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; escala prints the error alone, naming the option."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per field, its help from the field's metadata; values are checked later, by the config."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            help_text += f" ({'|'.join(f.metadata['choices'])})"
        if isinstance(default, tuple):
            help_text += f" [default: {','.join(map(str, default))}]"
        elif kind is not bool:
            help_text += f" [default: {default}]"
        if kind is bool:
            parser.add_argument(
                flag(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            metavar = "N,N,..." if isinstance(default, tuple) else f.name.upper()
            parser.add_argument(
                flag(f.name), dest=f.name, default=argparse.SUPPRESS, metavar=metavar, help=help_text
            )


def given(args: argparse.Namespace, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Only the options the user actually typed (defaults are suppressed), so a config file is not masked."""
    return {k: v for k, v in vars(args).items() if k not in exclude and k != "func"}


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"escala: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_guarded(func, *args) -> int:
    """Turn known failures into one line and an exit status instead of a traceback."""
    from escala.runtime.spawn import WorkerFailed

    try:
        result = func(*args)
        return int(result or 0)
    except UserError as err:
        fail(str(err), UserError.exit_code)
    except WorkerFailed as err:
        fail(str(err), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def positive_ints(text: str, what: str) -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``; anything else is a one-line error naming ``what``."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise UserError(f"{what} {text!r}: give integers separated by commas") from None
    if not values or min(values) < 1:
        raise UserError(f"{what} {text!r}: give positive integers separated by commas")
    return values
