"""Requests that arrive together go through the network together.

:class:`Batcher` keeps a queue of network inputs on the event loop. One task
takes the first input that arrives, waits at most ``max_wait_ms`` for more
(it stops waiting once ``max_batch`` views are there), and hands the lot to
``run`` on the one model thread, off the event loop, so the server keeps
reading requests and answering others while the network runs. Inputs that
arrive during a forward pass wait in the queue and form the next batch at
once: under load the batch fills by itself and the wait costs nothing; a lone
request waits ``max_wait_ms`` at most.

``run(items) -> outputs`` must return one output per item, in order; its
exception goes to every request of that batch (each answered on its own),
never to the task, which goes on with the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

__all__ = ["Batcher"]

log = logging.getLogger("alexnet.serve")


class Batcher:
    """Batches items for ``run`` (see the module docstring). Use inside a running event loop::

        b = Batcher(run, max_batch=32, max_wait_ms=5, size=lambda item: item.views)
        await b.start()
        out = await b.submit(item)
        await b.stop()
    """

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 size: Callable[[Any], int] = lambda item: 1):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.run, self.max_batch, self.max_wait, self.size = run, int(max_batch), max_wait_ms / 1000.0, size
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._held: tuple[Any, asyncio.Future] | None = None  # an item that did not fit the last batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="alexnet-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, item: Any) -> Any:
        """The output of ``run`` for ``item``, computed in a batch with whatever else is waiting."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not awaited")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    async def _next_batch(self) -> list[tuple[Any, asyncio.Future]]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first = self._held if self._held is not None else await self._queue.get()
        self._held = None
        batch, views = [first], self.size(first[0])
        deadline = loop.time() + self.max_wait
        while views < self.max_batch:
            if self._queue.empty():
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
            else:
                nxt = self._queue.get_nowait()
            n = self.size(nxt[0])
            if views + n > self.max_batch:
                self._held = nxt  # first of the next batch
                break
            batch.append(nxt)
            views += n
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # a client that left is not computed
            if not live:
                continue
            try:
                outs = await loop.run_in_executor(self._executor, self.run, [item for item, _ in live])
                if len(outs) != len(live):
                    raise RuntimeError(f"run returned {len(outs)} outputs for {len(live)} items")
            except asyncio.CancelledError:
                for _, fut in live:
                    if not fut.done():
                        fut.cancel()
                raise
            except Exception as e:  # every request of the batch gets it; the loop goes on
                log.exception("a batch of %d failed", len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), out in zip(live, outs):
                if not fut.done():
                    fut.set_result(out)
