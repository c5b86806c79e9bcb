"""The range check behind the warnings and the drift counters: the same answer as comparing value by value,
whatever the batch's length against the check's blocks of rows."""

from __future__ import annotations

import numpy as np
import pytest

from serve.ranges import BLOCK_ROWS, RangeCheck

LOWER = np.array([0.0, -1.0, 10.0], dtype=np.float32)
UPPER = np.array([1.0, 1.0, 20.0], dtype=np.float32)


def inside(n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(LOWER, UPPER, (n, 3)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 7, BLOCK_ROWS - 1, BLOCK_ROWS, BLOCK_ROWS + 1, 3 * BLOCK_ROWS + 5])
def test_rows_within_their_bounds_are_none_outside(n: int) -> None:
    assert RangeCheck(LOWER, UPPER).outside(inside(n)) is None


@pytest.mark.parametrize("n", [1, BLOCK_ROWS, BLOCK_ROWS + 1, 3 * BLOCK_ROWS + 5])
def test_values_outside_are_found_where_they_are_in_any_block(n: int) -> None:
    rows = inside(n)
    rows[-1, 2] = 20.5  # above, in the last block
    rows[n // 2, 0] = -0.25  # below, in a middle one
    rows[0, 1] = np.nextafter(np.float32(-1.0), np.float32(-2.0))  # the float32 just below a bound
    mask = RangeCheck(LOWER, UPPER).outside(rows)
    assert mask is not None
    assert mask.tolist() == ((rows < LOWER) | (rows > UPPER)).tolist()


def test_the_bounds_themselves_are_inside() -> None:
    assert RangeCheck(LOWER, UPPER).outside(np.stack([LOWER, UPPER])) is None


def test_the_same_rows_asked_again_get_the_same_answer_and_other_rows_their_own() -> None:
    check = RangeCheck(LOWER, UPPER)
    rows = inside(10)
    rows[3, 0] = 5.0
    first = check.outside(rows)
    assert first is not None and check.outside(rows) is first
    equal_copy = rows.copy()
    assert check.outside(equal_copy) is not first and check.outside(equal_copy).tolist() == first.tolist()
    assert check.outside(inside(10)) is None and check.outside(rows) is not first


@pytest.mark.parametrize("n", [1, BLOCK_ROWS, BLOCK_ROWS + 1, 3 * BLOCK_ROWS + 5])
def test_rows_are_within_only_when_every_value_is_a_number_inside_its_bounds(n: int) -> None:
    check = RangeCheck(LOWER, UPPER)
    assert check.within(inside(n)) and check.within(np.stack([LOWER, UPPER]))
    for value in (np.nan, np.inf, -np.inf, 20.5):
        rows = inside(n)
        rows[n // 2, 2] = value
        assert not check.within(rows)
        # NaN is not outside either bound: `within` is what also answers for finiteness
        assert (check.outside(rows) is None) == np.isnan(value)


def test_rows_found_within_are_none_outside_without_another_look() -> None:
    check = RangeCheck(LOWER, UPPER)
    rows = inside(10)
    assert check.within(rows)
    rows[3, 0] = 5.0  # written after the check (requests' rows never are): the answer given stands
    assert check.outside(rows) is None
    assert check.outside(rows.copy()) is not None
