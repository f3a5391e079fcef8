"""Requests from many callers scored together, in a served replica (runner/serve_app.py).

One scorer, one batch at a time. A request that finds the scorer idle waits at most `wait_s` for company; the
requests that arrive while a batch scores queue, and the next batch takes all of them (up to `max_requests`):
under load the batches grow to what has waited, at low load a request waits `wait_s` at most.

Why not Ray Serve's `@serve.batch`: it forms its next batch on its timer while the last one is still scoring
(`_BatchQueue._process_batches` does not wait for its `max_concurrent_batches` semaphore before it collects), so
with one scorer its batches stay at what arrives in `wait_s`, each waiting its turn behind the others. Measured
on 2 cores, one replica, closed-loop callers of one record each (bench/bench_serve.py): at concurrency 8 batches
of 1.4 records, 47 requests/s, p50 166 ms (138 ms of it waiting inside the batcher); see bench/RESULTS.md for the
same cells with this one.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable


class Batcher:
    """`await batcher.score(dialogues)` -> that request's rows of `score_many(all dialogues of the batch)`, run on
    a worker thread (the event loop keeps accepting requests while a batch scores)."""

    def __init__(self, score_many: Callable[[list[Any]], Any], max_requests: int, wait_s: float) -> None:
        self.score_many, self.max_requests, self.wait_s = score_many, max_requests, wait_s
        self.queue: asyncio.Queue[tuple[list[Any], asyncio.Future[Any]]] | None = None  # made in the serving loop
        self.worker: asyncio.Task[None] | None = None

    async def score(self, dialogues: list[Any]) -> Any:
        if self.queue is None:
            self.queue = asyncio.Queue()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._run())
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((dialogues, done))
        return await done

    async def _run(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_requests:
                if not self.queue.empty():  # what queued while the last batch scored: taken at once
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            batch = [(d, f) for d, f in batch if not f.done()]  # a caller that went away
            if batch:
                await self._score(batch)

    async def _score(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        flat = [d for dialogues, _ in batch for d in dialogues]
        try:
            probs = await asyncio.to_thread(self.score_many, flat)
        except Exception as e:  # noqa: BLE001 - every caller of the batch gets the scorer's error
            for _, f in batch:
                if not f.done():
                    f.set_exception(e)
            return
        start = 0
        for dialogues, f in batch:
            if not f.done():
                f.set_result(probs[start : start + len(dialogues)])
            start += len(dialogues)
