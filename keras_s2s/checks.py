"""The one way to check an argument: each check raises a ValueError that names the argument, what
was expected and the value received, as `"{name} must be {expected}, got {value!r}"`.

A bool is never a number here (`True` is an int to Python, but `units=True` is a mistake).
This module imports nothing, so the CLI's parser and configuration can use it.

>>> from keras_s2s.checks import check_int, check_number
>>> check_int("units", True)
Traceback (most recent call last):
...
ValueError: units must be a positive int, got True
>>> check_number("dropout", 1.0, 0.0, 1.0, high_inclusive=False)
Traceback (most recent call last):
...
ValueError: dropout must be a number in [0.0, 1.0), got 1.0
"""

_INT_BOUNDS = {0: "a non-negative int", 1: "a positive int"}


def _fail(name, expected, value, optional):
    raise ValueError(f"{name} must be {expected}{' or None' if optional else ''}, got {value!r}")


def _is_number(value, types):
    return isinstance(value, types) and not isinstance(value, bool)


def check_int(name, value, low=1, high=None, optional=False):
    """`value` an int (not a bool) >= `low` (and <= `high`); None too when `optional`."""
    if optional and value is None:
        return
    if not (_is_number(value, int) and value >= low and (high is None or value <= high)):
        expected = (f"an int in [{low}, {high}]" if high is not None
                    else _INT_BOUNDS.get(low, f"an int >= {low}"))
        _fail(name, expected, value, optional)


def check_positive_int(name, value, optional=False):
    check_int(name, value, 1, optional=optional)


def check_non_negative_int(name, value, optional=False):
    check_int(name, value, 0, optional=optional)


def check_number(name, value, low, high=None, low_inclusive=True, high_inclusive=True,
                 optional=False):
    """`value` a real number (int or float, not a bool) between `low` and `high` (None: no
    upper bound), each bound included or not; None too when `optional`."""
    if optional and value is None:
        return
    in_range = _is_number(value, (int, float)) and (
        value >= low if low_inclusive else value > low) and (
        high is None or (value <= high if high_inclusive else value < high))
    if not in_range:
        low_bracket, high_bracket = "[" if low_inclusive else "(", "]" if high_inclusive else ")"
        bounds = (f"{'>=' if low_inclusive else '>'} {float(low)}" if high is None
                  else f"in {low_bracket}{float(low)}, {float(high)}{high_bracket}")
        _fail(name, f"a number {bounds}", value, optional)


def check_fraction(name, value):
    """`value` a number in [0, 1): a dropout rate, label smoothing, a held-out fraction."""
    check_number(name, value, 0.0, 1.0, high_inclusive=False)


def check_dropout(value):
    check_fraction("dropout", value)


def check_bool(name, value):
    if not isinstance(value, bool):
        _fail(name, "True or False", value, False)


def check_choice(name, value, choices):
    if value not in tuple(choices):
        _fail(name, f"one of {tuple(choices)}", value, False)


def check_heads(d_model, num_heads):
    """Multi-head attention splits d_model evenly across the heads."""
    check_positive_int("d_model", d_model)
    check_positive_int("num_heads", num_heads)
    if d_model % num_heads:
        raise ValueError(f"d_model must be divisible by num_heads, got d_model={d_model} and "
                         f"num_heads={num_heads}")


def check_batch_tokens(batch_tokens, longest):
    """A token-based batch (`batch_tokens`, optional) must hold one sequence of the longest
    length allowed."""
    check_positive_int("batch_tokens", batch_tokens, optional=True)
    if batch_tokens is not None and batch_tokens < longest:
        raise ValueError(f"batch_tokens={batch_tokens} cannot hold one sequence of the longest "
                         f"length allowed ({longest}: max_source_length / max_target_length); "
                         f"give at least {longest}")
