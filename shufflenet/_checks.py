"""Argument checks shared by the package, so bad input fails early with a message that names it."""

import argparse
import numbers


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_choice(name: str, value, allowed) -> None:
    # 2.0 == 2 and True == 1 in Python, so an int choice also demands an int, or torch fails later.
    wrong_type = isinstance(value, bool) or (
        all(isinstance(a, int) for a in allowed) and not isinstance(value, numbers.Integral))
    if wrong_type or value not in allowed:
        shown = ", ".join(str(a) for a in allowed)
        raise ValueError(f"{name} must be one of {{{shown}}}, got {value!r}")


def positive_int_arg(text: str) -> int:
    """An argparse type: a positive integer, or a one-line error that shows what was given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float_arg(text: str) -> float:
    """An argparse type: a positive number, or a one-line error that shows what was given."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def fraction_arg(text: str) -> float:
    """An argparse type: a number from 0 up to (not including) 1, or a one-line error that shows what was
    given."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value
