"""Keeps the next batches already on the device while the current step runs.

The wrapped iterator is expected to do the host→device copy itself (e.g. a generator over
`sharding.global_batch`), so pulling it `depth` items ahead starts those copies early: JAX
dispatches them asynchronously, and the step finds its batch resident instead of waiting for a
copy issued when it needed it (flax's `prefetch_to_device`, for a mesh).
"""

import collections
from typing import Iterable, Iterator, TypeVar

Item = TypeVar("Item")


class _Raised:
    """An error the source raised, held in its place in the queue."""

    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Iterator[Item]):
    """Yields `source`'s items in order, having pulled up to `depth` of them ahead.

    An error raised while pulling ahead is re-raised only when the consumer reaches the item it
    stood for, so a bad batch k+2 still lets steps k and k+1 run (and checkpoint) first.
    """

    def __init__(self, source: Iterable[Item], depth: int = 2):
        if depth < 1:
            raise ValueError(f"Prefetch depth must be at least 1, got {depth}.")
        self._source = iter(source)
        self._depth = depth
        self._queue = collections.deque()
        self._exhausted = False

    def _fill(self) -> None:
        while not self._exhausted and len(self._queue) < self._depth:
            try:
                self._queue.append(next(self._source))
            except StopIteration:
                self._exhausted = True
            except Exception as error:  # pylint: disable=broad-except  # Re-raised in place.
                self._queue.append(_Raised(error))
                self._exhausted = True

    def __next__(self) -> Item:
        self._fill()
        if not self._queue:
            raise StopIteration
        item = self._queue.popleft()
        self._fill()  # The copies of the next items start before this one is used.
        if isinstance(item, _Raised):
            self._queue.clear()
            raise item.error
        return item
