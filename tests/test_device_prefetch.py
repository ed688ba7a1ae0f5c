"""device_prefetch.Prefetcher: order, look-ahead, clean exhaustion, errors at their place."""

import pytest

from advseg_jax import device_prefetch


class _Counting:
    """An iterator over range(n) that records how many items were pulled from it."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.pulled = n, fail_at, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.pulled == self.fail_at:
            self.pulled += 1
            raise KeyError(f"bad item {self.fail_at}")
        if self.pulled >= self.n:
            raise StopIteration
        self.pulled += 1
        return self.pulled - 1


def test_order_is_kept_and_items_are_pulled_depth_ahead():
    source = _Counting(5)
    prefetcher = device_prefetch.Prefetcher(source, depth=2)
    assert source.pulled == 0  # Nothing is pulled before the first request.
    assert next(prefetcher) == 0
    assert source.pulled == 3  # Items 1 and 2 wait while item 0 is in use.
    assert next(prefetcher) == 1
    assert source.pulled == 4
    assert list(prefetcher) == [2, 3, 4]


def test_exhausts_cleanly_and_stays_exhausted():
    prefetcher = device_prefetch.Prefetcher(iter([]), depth=2)
    assert list(prefetcher) == []
    prefetcher = device_prefetch.Prefetcher(range(3), depth=5)  # Deeper than the source.
    assert list(prefetcher) == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(prefetcher)


def test_an_error_pulled_ahead_is_raised_at_its_own_place():
    source = _Counting(10, fail_at=3)
    prefetcher = device_prefetch.Prefetcher(source, depth=2)
    assert [next(prefetcher) for _ in range(3)] == [0, 1, 2]  # Pulled ahead, not raised yet.
    assert source.pulled == 4
    with pytest.raises(KeyError, match="bad item 3"):
        next(prefetcher)
    with pytest.raises(StopIteration):  # Nothing is pulled past a failed source.
        next(prefetcher)
    assert source.pulled == 4


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="at least 1, got 0"):
        device_prefetch.Prefetcher(range(3), depth=0)
