"""Command-line parsing shared by `ptycho-patches`, `python -m ptycho` and the benchmark:
errors are one line and exit status 2, never a usage dump or a traceback."""

from __future__ import annotations

import argparse

__all__ = ["Parser", "UsageError", "positive", "seed"]


class UsageError(Exception):
    """A problem with the input, the arguments or the files: one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors raise :class:`UsageError` instead of exiting."""

    def error(self, message):
        # argparse writes "argument --N: --N must be >= 1": the validators name their option.
        prefix, _, rest = message.partition(": ")
        if rest.startswith(prefix.removeprefix("argument ") + " "):
            message = rest
        raise UsageError(message)


def integer(option: str, low: int, high: int | None = None):
    """An argparse `type=` for an integer with `low <= value` (and `value < high`) that
    names `option` in its errors."""
    bounds = f">= {low}" if high is None else f"an integer with {low} <= {option} < {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} must be an integer. Received: {text!r}"
            ) from None
        if value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"{option} must be {bounds}. Received: {value}")
        return value

    return parse


def positive(option: str):
    """An argparse `type=` that accepts an integer >= 1 and names `option` otherwise."""
    return integer(option, 1)


def seed(option: str):
    """An argparse `type=` for a random seed: an integer with 0 <= seed < 2**64.

    `numpy.random.default_rng` takes any integer >= 0; the bound keeps the seed storable
    as a `uint64` number in the files written (a larger one would need a pickled object).
    """
    return integer(option, 0, 2**64)
