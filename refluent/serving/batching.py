"""Micro-batching for request/response front ends: many threads submit, one thread processes
batches (the HTTP front end scores through it, so concurrent requests share a batch)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Collects submissions from many threads into batches for one processing thread.

    A batch starts with the first submission waiting and takes more until it holds
    ``max_batch_size`` items or ``linger_s`` has passed; a submission is never split (one
    larger than ``max_batch_size`` is a batch of its own). ``process`` gets the items of the
    batch and returns one result per item; each submitter's future gets its own results, in
    order, or the exception ``process`` raised.

    Args:
        process: Batch function.
        max_batch_size: Most items per batch.
        linger_s: Longest wait for more items once a batch has one.
        name: Thread name.

    Examples:
        >>> batcher = MicroBatcher(lambda xs: [x * 2 for x in xs], 8, 0.001)
        >>> batcher.start()
        >>> batcher.submit([1, 2]).result(), batcher.submit([5]).result()
        ([2, 4], [10])
        >>> batcher.close()
    """

    def __init__(self, process: Callable[[list[T]], list[R]], max_batch_size: int = 64,
                 linger_s: float = 0.002, name: str = "refluent-batcher") -> None:
        self.process = process
        self.max_batch_size = max_batch_size
        self.linger_s = linger_s
        self.name = name
        self.batches = 0
        self._queue: queue.SimpleQueue[tuple[list[T], Future[list[R]]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the processing thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def submit(self, items: Sequence[T]) -> Future[list[R]]:
        """Queue ``items`` for the next batch; the future holds their results."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        fut: Future[list[R]] = Future()
        if not items:
            fut.set_result([])
            return fut
        self._queue.put((list(items), fut))
        return fut

    def close(self, timeout: float = 10.0) -> None:
        """Process what was submitted, then stop the thread."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        held: tuple[list[T], Future[list[R]]] | None = None
        stopping = False
        while not stopping or held is not None:
            first = held if held is not None else self._queue.get()
            held = None
            if first is None:
                stopping = True
                continue
            batch = [first]
            size = len(first[0])
            deadline = time.monotonic() + self.linger_s
            while size < self.max_batch_size:
                wait = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                if size + len(nxt[0]) > self.max_batch_size:
                    held = nxt
                    break
                batch.append(nxt)
                size += len(nxt[0])
            self._process(batch)

    def _process(self, batch: list[tuple[list[T], Future[list[R]]]]) -> None:
        items = [item for sub, _ in batch for item in sub]
        self.batches += 1
        try:
            results = self.process(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} result(s) for {len(items)} "
                                   "item(s)")
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting submitter
            for _, fut in batch:
                fut.set_exception(exc)
            return
        start = 0
        for sub, fut in batch:
            fut.set_result(results[start:start + len(sub)])
            start += len(sub)
