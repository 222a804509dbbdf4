"""Input and output checks, compiled once per model and applied per request.

``InputSchema.validate`` turns raw rows into a ``Batch`` or says exactly what is wrong with a value;
``OutputCheck.check`` says whether a tier's answer may be shown.
"""

from __future__ import annotations

import math
import operator
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt

from failsoft.config import FeatureSpec, OutputSpec

__all__ = ["Batch", "InputSchema", "InvalidValue", "OutputCheck"]

Row = dict[str, Any]
Matrix = npt.NDArray[np.float64]


class InvalidValue(ValueError):
    """A value inside a well-formed request is corrupt (NaN, wrong type, out of range, missing)."""


# width -> struct packer of that many float64s into a buffer (Batch.copy_into)
_PACK: dict[int, Callable[..., None]] = {}


def _packer(width: int) -> Callable[..., None]:
    _PACK[width] = struct.Struct(f"{width}d").pack_into
    return _PACK[width]


class Batch:
    """Validated rows of one request, in the model's feature order."""

    __slots__ = ("_matrix", "names", "rows", "unknown", "values")

    def __init__(self, names: tuple[str, ...], rows: list[Row], unknown: tuple[str, ...] = ()) -> None:
        self.names = names
        self.rows = rows
        self._matrix: Matrix | None = None
        # keys the request sent that are no declared input (a misspelt feature is answered without it)
        self.unknown = unknown
        # each row's values in feature order, all numbers, when the checks made them (see InputSchema._fast):
        # a one-row answer can be computed from them without a matrix at all
        self.values: list[tuple[float, ...]] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def of_matrix(cls, names: tuple[str, ...], matrix: Matrix) -> Batch:
        """A batch known only by its matrix (its rows are not kept): for backends that read nothing else
        (``Backend.reads_matrix``)."""
        batch = cls(names, [{}] * len(matrix))
        batch._matrix = matrix
        return batch

    @classmethod
    def join(cls, names: tuple[str, ...], batches: list[Batch]) -> Batch:
        """Several requests' rows as one batch; their matrices, where built already, are stacked rather
        than built again from the rows."""
        if len(batches) == 1:
            return batches[0]
        joined = cls(names, [row for b in batches for row in b.rows])
        if all(b._matrix is not None for b in batches):
            joined._matrix = np.concatenate([b._matrix for b in batches])
        return joined

    def copy_into(self, buf: Matrix, at: int) -> None:
        """The rows into ``buf[at : at + len(self)]`` (a monitor's window): from their values when no
        matrix was built, one copy rather than two."""
        values = self.values
        if self._matrix is None and values is not None:
            if len(values) == 1:
                row = values[0]
                width = len(row)
                try:  # half what numpy takes to read a tuple of Python numbers (~0.5 µs a request)
                    if buf.shape[1] != width:
                        raise ValueError(f"{width} values for {buf.shape[1]} columns")
                    (_PACK.get(width) or _packer(width))(buf, at * 8 * width, *row)
                except (struct.error, TypeError, ValueError, OverflowError):
                    buf[at] = row  # not a C-ordered float64 buffer, or a number no float holds: numpy's way
            else:
                buf[at : at + len(values)] = values
        else:
            buf[at : at + len(self.rows)] = self.matrix()

    def matrix(self) -> Matrix:
        """The rows as a float64 matrix (n_rows, n_features); missing optional values are NaN. Raises
        InvalidValue when the rows' values cannot be one: the request's fault, never the tier's."""
        if self._matrix is None and self.values is not None:
            self._matrix = np.array(self.values, dtype=np.float64)
        if self._matrix is None:
            names = self.names
            nan = math.nan
            try:
                self._matrix = np.array(
                    [[nan if (v := row.get(n)) is None else v for n in names] for row in self.rows],
                    dtype=np.float64,
                )
            except (OverflowError, ValueError, TypeError) as err:
                raise InvalidValue(f"the values cannot be read as numbers: {err}"[:300]) from None
        return self._matrix


# Unknown keys reported per request at most (a request of a thousand junk keys is not echoed back whole).
MAX_UNKNOWN = 10
# The Python types a float input may arrive as (bool, a subclass of int, is not one of them).
_NUMBERS = frozenset({float, int})
# The largest magnitude a float64 holds: an integer beyond it cannot reach a model as a number.
FLOAT_MAX = sys.float_info.max


def _within(lo: tuple[float, ...], row: tuple[float, ...], hi: tuple[float, ...]) -> bool:
    """Every value inside its bounds (compared in C)."""
    return all(map(operator.le, lo, row)) and all(map(operator.le, row, hi))


def _within_float(name: str, v: int) -> None:
    if not -FLOAT_MAX <= v <= FLOAT_MAX:
        raise InvalidValue(f"{name}: an integer of {v.bit_length()} bits is beyond a 64-bit float")


def _feature_check(spec: FeatureSpec) -> Callable[[Any], Any]:
    name, lo, hi, kind = spec.name, spec.min, spec.max, spec.type
    cats = frozenset(spec.categories) if spec.categories is not None else None

    def check(v: Any) -> Any:
        t = type(v)
        if kind == "float":
            if t is not float and t is not int:
                raise InvalidValue(f"{name}: expected a number, got {t.__name__} {v!r:.40}")
            if t is float and not math.isfinite(v):
                raise InvalidValue(f"{name}: {v} is not a finite number")
            if t is int:
                _within_float(name, v)
        elif kind == "int":
            if t is not int:
                if t is float and v.is_integer():
                    v = int(v)
                else:
                    raise InvalidValue(f"{name}: expected an integer, got {t.__name__} {v!r:.40}")
            else:
                _within_float(name, v)
        elif kind == "bool":
            if t is not bool:
                raise InvalidValue(f"{name}: expected true or false, got {t.__name__} {v!r:.40}")
            return v
        else:
            if t is not str:
                raise InvalidValue(f"{name}: expected a string, got {t.__name__} {v!r:.40}")
            if cats is not None and v not in cats:
                raise InvalidValue(f"{name}: unknown category {v!r:.40}")
            return v
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise InvalidValue(f"{name}: {v} is outside [{lo}, {hi}]")
        return v

    return check


class InputSchema:
    """The declared features of a model. With no features declared, any object row passes."""

    def __init__(self, features: Sequence[FeatureSpec]) -> None:
        self.features = tuple(features)
        self.names = tuple(f.name for f in features)
        inf = math.inf
        # (name, required, default, fast-path bounds or None, full check). Float features in range take a
        # fast path of two comparisons; anything else goes through the full check, which names the problem.
        self._checks = tuple(
            (
                f.name,
                f.required,
                f.default,
                (-inf if f.min is None else f.min, inf if f.max is None else f.max)
                if f.type == "float"
                else None,
                _feature_check(f),
            )
            for f in features
        )
        self.numeric = all(f.type != "string" for f in features)
        self._declared = frozenset(self.names)
        # Every input a float: a row of exactly the declared keys is checked in C (see _fast).
        self._floats = bool(features) and all(f.type == "float" for f in features)
        self._pick = operator.itemgetter(*self.names) if len(self.names) > 1 else None
        bounded = any(f.min is not None or f.max is not None for f in features)
        self._lo = tuple(-inf if f.min is None else f.min for f in features) if bounded else None
        self._hi = tuple(inf if f.max is None else f.max for f in features) if bounded else None

    def validate(self, rows: list[Any]) -> Batch:
        """Check every value; raise InvalidValue naming the row and feature at the first bad one."""
        if self._pick is not None and self._floats:
            batch = self._fast(rows)
            if batch is not None:
                return batch
        checks = self._checks
        if not checks:
            for i, row in enumerate(rows):
                if type(row) is not dict:
                    raise InvalidValue(
                        f"row {i}: expected an object of feature values, got {type(row).__name__}"
                    )
            return Batch(self.names, rows)
        out: list[Row] = []
        n_declared = len(checks)
        unknown: set[str] = set()
        for i, row in enumerate(rows):
            if type(row) is not dict:
                raise InvalidValue(f"row {i}: expected an object of feature values, got {type(row).__name__}")
            if len(row) != n_declared and len(unknown) < MAX_UNKNOWN:
                # the common row holds exactly the declared inputs and pays one comparison
                unknown.update(k for k in row if k not in self._declared)
            clean: Row = {}
            for name, required, default, bounds, check in checks:
                v = row.get(name)
                if bounds is not None and type(v) is float and bounds[0] <= v <= bounds[1] and v - v == 0.0:
                    clean[name] = v  # the common case: a finite float inside its range
                    continue
                if v is None:
                    if required:
                        raise InvalidValue(f"row {i}: {name}: required feature is missing")
                    clean[name] = default
                    continue
                try:
                    clean[name] = check(v)
                except InvalidValue as err:
                    raise InvalidValue(f"row {i}: {err}") from None
            out.append(clean)
        return Batch(self.names, out, tuple(sorted(unknown))[:MAX_UNKNOWN] if unknown else ())

    def _fast(self, rows: list[Any]) -> Batch | None:
        """The common request of an all-float model, checked in C rather than value by value: every row an
        object of exactly the declared keys, every value a float or an int, all finite and inside their
        ranges. The rows are kept as sent, with their values in feature order. None when any of that does
        not hold: the per-value path then names the problem (or passes what it allows, such as a missing
        optional value)."""
        pick, n = self._pick, len(self.names)
        assert pick is not None
        try:
            values = [pick(row) for row in rows if type(row) is dict and len(row) == n]
        except KeyError:  # a declared input missing (so some other key is unknown)
            return None
        if len(values) != len(rows):
            return None
        lo, hi = self._lo, self._hi
        for row in values:
            kinds = set(map(type, row))
            if not kinds <= _NUMBERS:
                return None
            if int in kinds and not all(-FLOAT_MAX <= v <= FLOAT_MAX for v in row):
                return None  # an integer beyond a float (summed with ints only, it would not overflow)
            try:
                total = sum(row)
            except OverflowError:  # an int beyond a float, summed with floats
                return None
            if total - total != 0.0:  # some value is NaN or infinite (or the sum overflowed): look closer
                return None
            if lo is not None and hi is not None and not _within(lo, row, hi):
                return None
        batch = Batch(self.names, rows)
        batch.values = values
        return batch

    def unknown_keys(self, rows: list[Any]) -> tuple[str, ...]:
        """The keys of ``rows`` that are no declared input (at most MAX_UNKNOWN), for a request that failed
        its checks: a misspelt required feature is first seen as missing."""
        if not self._checks:
            return ()
        found = {k for row in rows[:MAX_UNKNOWN] if type(row) is dict for k in row if k not in self._declared}
        return tuple(sorted(map(str, found)))[:MAX_UNKNOWN]

    def unknown_warnings(self, unknown: tuple[str, ...]) -> tuple[str, ...]:
        """One line per unknown key, with the closest declared input."""
        from failsoft.config import suggest

        out = []
        for key in unknown:
            hint = suggest(str(key), self.names)
            out.append(f"unknown input {str(key)[:60]!r}" + (f" ({hint})" if hint else "") + ": not used")
        return tuple(out)

    def tensor_metadata(self) -> list[dict[str, Any]]:
        """Open Inference Protocol input tensors: one per feature, a batch dimension of -1."""
        dt = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}
        return [{"name": f.name, "datatype": dt[f.type], "shape": [-1]} for f in self.features]


class OutputCheck:
    """Whether one row's answer may be shown: type, range, length, no NaN."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self._check = self._compile(spec)
        # what check_many asks of plain floats at once: finite, within the bounds (msgspec refuses bool,
        # str, None and NaN as the check one by one does; anything it refuses is checked one by one)
        lo = -sys.float_info.max if spec.min is None else spec.min
        hi = sys.float_info.max if spec.max is None else spec.max
        self._floats = list[Annotated[float, msgspec.Meta(ge=lo, le=hi)]] if spec.type == "float" else None

    def check(self, value: Any) -> str | None:
        """None when the value passes, else what is wrong with it."""
        return self._check(value)

    def check_many(self, values: list[Any]) -> str | None:
        """The first problem among ``values`` (None when every one passes). Numbers under a float spec are
        checked at once by msgspec (~0.012 µs a value, against ~0.2 one by one): a batch's answers, a
        shadow candidate's call. When that refuses them, the check one by one says which and why."""
        if self._floats is not None:
            try:
                msgspec.convert(values, self._floats)
                return None
            except msgspec.ValidationError:
                pass
        check = self._check
        for value in values:
            if (problem := check(value)) is not None:
                return problem
        return None

    @staticmethod
    def _compile(spec: OutputSpec) -> Callable[[Any], str | None]:
        lo, hi = spec.min, spec.max

        def number(v: Any) -> str | None:
            if type(v) is bool or not isinstance(v, int | float):
                return f"expected a number, got {type(v).__name__}"
            if not math.isfinite(v):
                return f"{v} is not finite"
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                return f"{v} is outside [{lo}, {hi}]"
            return None

        def sequence(v: Any) -> str | None:
            if not isinstance(v, list | tuple):
                return f"expected a list, got {type(v).__name__}"
            n = len(v)
            if spec.length is not None and n != spec.length:
                return f"expected {spec.length} values, got {n}"
            if n < spec.min_length:
                return "empty list" if n == 0 else f"expected at least {spec.min_length} items, got {n}"
            if spec.max_length is not None and n > spec.max_length:
                return f"expected at most {spec.max_length} items, got {n}"
            return None

        if spec.type == "float":
            return number
        if spec.type == "int":
            return lambda v: number(v) or (None if type(v) is int else f"expected an integer, got {v!r:.40}")
        if spec.type == "string":
            return lambda v: None if type(v) is str and v else f"expected a non-empty string, got {v!r:.40}"
        if spec.type == "list":
            return sequence
        if spec.type == "vector":
            return lambda v: sequence(v) or next((e for x in v if (e := number(x))), None)

        def anything(v: Any) -> str | None:
            if v is None:
                return "no value"
            if isinstance(v, float) and not math.isfinite(v):
                return f"{v} is not finite"
            return None

        return anything
