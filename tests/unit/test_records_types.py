"""``all_exactly``: the one-pass type check behind the sources' and filters' fast paths."""

from eventspine.records import all_exactly


def test_all_exactly_wants_the_type_itself_not_a_subclass() -> None:
    assert all_exactly([1, 2, 3], int)
    assert all_exactly([], int)
    assert not all_exactly([1, True], int)  # bool is an int subclass: not epoch milliseconds
    assert not all_exactly([1, 2.0], int)
    assert all_exactly([True, False], bool)
    assert not all_exactly([True, 1], bool)
