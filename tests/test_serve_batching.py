"""The served replica's batcher (runner/serve_batching.py), on a real asyncio loop with a scorer that takes real
time on a worker thread (a sleep stands in for ONNX Runtime): what arrives while a batch scores is the next batch,
however it trickles in; a caller gets its own rows; an error reaches every caller of its batch and no other."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from raytune_bsm.runner.serve_batching import Batcher


class SlowScorer:
    """Scores a batch in `seconds`: row i's value is the dialogue itself (so each caller can check its rows)."""

    def __init__(self, seconds: float, fail_on: str | None = None) -> None:
        self.seconds, self.fail_on, self.batches = seconds, fail_on, []
        self.threads: set[str] = set()

    def __call__(self, dialogues: list) -> np.ndarray:
        self.batches.append(list(dialogues))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        if self.fail_on in dialogues:
            raise RuntimeError("the session failed")
        return np.array([[float(d)] for d in dialogues])


def test_what_trickles_in_while_a_batch_scores_is_the_next_batch():
    scorer = SlowScorer(0.2)
    batcher = Batcher(scorer, max_requests=64, wait_s=0.005)

    async def main():
        first = asyncio.create_task(batcher.score(["0"]))
        await asyncio.sleep(0.02)  # the first batch is scoring now
        later = []
        for k in range(1, 11):  # one request every 10 ms while it scores: a timer-formed batcher cuts 10 batches
            later.append(asyncio.create_task(batcher.score([str(k), str(100 + k)])))
            await asyncio.sleep(0.01)
        return await first, await asyncio.gather(*later)

    first, later = asyncio.run(main())
    assert [len(b) for b in scorer.batches] == [1, 20]  # requests 1..10, two records each, in one batch
    assert first.tolist() == [[0.0]]
    assert [r.tolist() for r in later] == [[[float(k)], [100.0 + k]] for k in range(1, 11)]
    assert "MainThread" not in scorer.threads  # off the event loop


def test_an_idle_scorer_waits_at_most_the_wait_for_company_and_caps_a_batch():
    scorer = SlowScorer(0.05)
    batcher = Batcher(scorer, max_requests=4, wait_s=0.05)

    async def main():
        t = time.perf_counter()
        alone = await batcher.score(["7"])
        waited = time.perf_counter() - t
        many = await asyncio.gather(*(batcher.score([str(k)]) for k in range(10)))
        return alone, waited, many

    alone, waited, many = asyncio.run(main())
    assert alone.tolist() == [[7.0]] and 0.1 <= waited < 0.5  # its 50 ms wait plus its 50 ms of scoring
    assert [len(b) for b in scorer.batches] == [1, 4, 4, 2]  # at most max_requests requests a batch
    assert [r.tolist() for r in many] == [[[float(k)]] for k in range(10)]


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_scores():
    scorer = SlowScorer(0.05, fail_on="13")
    batcher = Batcher(scorer, max_requests=8, wait_s=0.02)

    async def main():
        bad = await asyncio.gather(batcher.score(["12"]), batcher.score(["13"]), return_exceptions=True)
        good = await batcher.score(["14"])
        return bad, good

    bad, good = asyncio.run(main())
    assert [type(e) for e in bad] == [RuntimeError, RuntimeError]
    assert good.tolist() == [[14.0]]


def test_a_caller_that_went_away_is_not_scored():
    scorer = SlowScorer(0.1)
    batcher = Batcher(scorer, max_requests=8, wait_s=0.005)

    async def main():
        busy = asyncio.create_task(batcher.score(["1"]))
        await asyncio.sleep(0.02)
        gone = asyncio.create_task(batcher.score(["2"]))
        stays = asyncio.create_task(batcher.score(["3"]))
        await asyncio.sleep(0.01)
        gone.cancel()  # e.g. its client disconnected while it queued
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await busy, await stays

    busy, stays = asyncio.run(main())
    assert scorer.batches == [["1"], ["3"]]
    assert stays.tolist() == [[3.0]]
