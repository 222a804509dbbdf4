from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from failsoft.config import FeatureSpec, OutputSpec
from failsoft.validation import Batch, InputSchema, InvalidValue, OutputCheck

SCHEMA = InputSchema(
    [
        FeatureSpec(name="age", type="float", min=0, max=120),
        FeatureSpec(name="visits", type="int"),
        FeatureSpec(name="plan", type="string", categories=["basic", "pro"]),
        FeatureSpec(name="vip", type="bool", required=False, default=False),
    ]
)
GOOD = {"age": 30.5, "visits": 3, "plan": "pro"}


def test_valid_row_gets_defaults_and_matrix() -> None:
    batch = SCHEMA.validate([GOOD])
    assert batch.rows == [{**GOOD, "vip": False}]
    numeric = InputSchema([FeatureSpec(name="a"), FeatureSpec(name="b", required=False)])
    assert numeric.validate([{"a": 1}]).matrix().tolist()[0][0] == 1.0
    assert math.isnan(numeric.validate([{"a": 1}]).matrix()[0, 1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"age": math.nan}, "not a finite"),
        ({"age": math.inf}, "not a finite"),
        ({"age": "30"}, "expected a number"),
        ({"age": True}, "expected a number"),
        ({"age": 121}, "outside"),
        ({"visits": 2.5}, "expected an integer"),
        ({"plan": "gold"}, "unknown category"),
        ({"vip": "yes"}, "true or false"),
        ({"age": None}, "missing"),
    ],
)
def test_corrupt_values_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValue, match=message) as info:
        SCHEMA.validate([GOOD, {**GOOD, **change}])
    assert str(info.value).startswith("row 1: ")


def test_integral_float_accepted_as_int() -> None:
    assert SCHEMA.validate([{**GOOD, "visits": 4.0}]).rows[0]["visits"] == 4


def test_non_object_row() -> None:
    with pytest.raises(InvalidValue, match="expected an object"):
        SCHEMA.validate([[1, 2, 3]])


@pytest.mark.parametrize(
    ("spec", "value", "ok"),
    [
        (OutputSpec(type="float", min=0, max=1), 0.3, True),
        (OutputSpec(type="float", min=0, max=1), 1.3, False),
        (OutputSpec(type="float"), math.nan, False),
        (OutputSpec(type="float"), "0.3", False),
        (OutputSpec(type="int"), 3, True),
        (OutputSpec(type="int"), 3.5, False),
        (OutputSpec(type="list"), ["a"], True),
        (OutputSpec(type="list"), [], False),
        (OutputSpec(type="list", max_length=2), [1, 2, 3], False),
        (OutputSpec(type="vector", length=2), [0.1, 0.9], True),
        (OutputSpec(type="vector", length=2), [0.1, math.nan], False),
        (OutputSpec(type="vector", length=2), [0.1], False),
        (OutputSpec(type="string"), "", False),
        (OutputSpec(), None, False),
        (OutputSpec(), {"anything": 1}, True),
    ],
)
def test_output_check(spec: OutputSpec, value: Any, ok: bool) -> None:
    assert (OutputCheck(spec).check(value) is None) is ok


def test_tensor_metadata() -> None:
    meta = SCHEMA.tensor_metadata()
    assert meta[0] == {"name": "age", "datatype": "FP64", "shape": [-1]}
    assert [m["datatype"] for m in meta] == ["FP64", "INT64", "BYTES", "BOOL"]


FLOATS = InputSchema([FeatureSpec(name="a", min=-1, max=1e6), FeatureSpec(name="b"), FeatureSpec(name="c")])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"a": 10**400, "b": 1, "c": 2}, "beyond a 64-bit float"),  # all ints: summing them cannot overflow
        ({"a": 1.0, "b": 10**400, "c": 2.0}, "beyond a 64-bit float"),
        ({"a": 1.0, "b": math.nan, "c": 2.0}, "not a finite"),
        ({"a": 1.0, "b": 2.0, "c": -math.inf}, "not a finite"),
        ({"a": 1.0, "b": True, "c": 2.0}, "expected a number"),
        ({"a": 1.0, "b": "2", "c": 2.0}, "expected a number"),
        ({"a": -2.0, "b": 1.0, "c": 2.0}, "outside"),
        ({"a": 1.0, "b": 1.0, "x": 2.0}, "missing"),
    ],
)
def test_the_all_float_fast_path_leaves_every_bad_row_to_the_checks_that_name_it(
    row: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidValue, match=message):
        FLOATS.validate([row])


def test_the_all_float_fast_path_keeps_values_in_feature_order() -> None:
    batch = FLOATS.validate([{"c": 3.0, "b": 2, "a": 1.5}, {"a": 0.0, "b": -1.0, "c": 1e300}])
    assert batch.values == [(1.5, 2, 3.0), (0.0, -1.0, 1e300)]
    assert batch.matrix().tolist() == [[1.5, 2.0, 3.0], [0.0, -1.0, 1e300]]
    other = FLOATS.validate([{"a": 1.0, "b": 2.0, "c": 3.0, "x": 4.0}])  # a key more: the per-value path
    assert other.values is None and other.unknown == ("x",) and other.matrix().tolist() == [[1.0, 2.0, 3.0]]


def test_a_row_copied_into_a_buffer_holds_its_numbers_whatever_the_buffer() -> None:
    """One row goes in by struct (half numpy's cost); a buffer it cannot take (a column view, another width)
    and a number no float holds go numpy's way, with numpy's error."""
    names = ("a", "b", "c")
    batch = Batch(names, [{}])
    batch.values = [(1.5, 2, True)]
    buf = np.full((4, 3), np.nan)
    batch.copy_into(buf, 2)
    assert buf[2].tolist() == [1.5, 2.0, 1.0] and np.isnan(buf[[0, 1, 3]]).all()
    wide = np.zeros((4, 6))
    batch.copy_into(wide[:, ::2], 1)  # not contiguous: numpy's way
    assert wide[1].tolist() == [1.5, 0.0, 2.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        batch.copy_into(np.zeros((4, 2)), 0)  # too narrow, as numpy says
    batch.values = [(1.5, 10**400, 0.0)]
    with pytest.raises(OverflowError):
        batch.copy_into(buf, 0)


@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(min_value=0, max_value=1),
            st.integers(-3, 3),
            st.integers(-(2**70), 2**70),
            st.booleans(),
            st.text(max_size=3),
            st.none(),
        ),
        max_size=40,
    ),
    st.sampled_from([(0.0, 1.0), (None, None), (-1.0, None)]),
)
def test_answers_checked_at_once_say_what_checking_them_one_by_one_says(
    values: list[Any], bounds: tuple[float | None, float | None]
) -> None:
    check = OutputCheck(OutputSpec(type="float", min=bounds[0], max=bounds[1]))

    def one_by_one(vs: list[Any]) -> str | None:
        return next((p for p in map(check.check, vs) if p is not None), None)

    assert check.check_many(values) == one_by_one(values)
    floats = [v for v in values if type(v) is float]  # the case checked at once
    assert check.check_many(floats) == one_by_one(floats)
