"""The spacing of scheduling passes under load (a pure function)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from central.control.scheduler import BUSY_LOOP, PASS_GAP_FACTOR, pass_gap

SHORTEST, LONGEST = 0.002, 0.02


@given(took=st.floats(0, 10), busy=st.floats(0, 1))
def test_the_gap_stays_between_its_bounds(took, busy):
    assert SHORTEST <= pass_gap(took, busy, SHORTEST, LONGEST) <= LONGEST


@given(took=st.floats(0, 10), busy=st.floats(BUSY_LOOP, 1, exclude_min=True))
def test_a_saturated_loop_gets_the_longest_gap(took, busy):
    assert pass_gap(took, busy, SHORTEST, LONGEST) == LONGEST


def test_a_loop_with_time_to_spare_waits_a_few_passes_long():
    assert pass_gap(0.001, 0.3, SHORTEST, LONGEST) == PASS_GAP_FACTOR * 0.001  # a 1 ms pass: the next 4 ms later
    assert pass_gap(0.0001, 0.3, SHORTEST, LONGEST) == SHORTEST  # a cheap pass still lets a burst gather
    assert pass_gap(0.5, 0.3, SHORTEST, LONGEST) == LONGEST  # a slow pass never holds jobs back longer
