"""Admission control in front of the model: who may wait, how many, and for how long.

* A request that uploads images takes an *image slot* before it decodes anything; there are
  ``max_waiting_images`` of them, and when they are all taken the request is answered 503 with
  ``Retry-After`` at once. Decoded images therefore never pile up: at most that many wait for the
  model, each at most the working size (serving/limits.py).
* Full-size decodes run at most ``decode_slots`` at a time (each may hold up to
  ``ImageLimits.peak_decode_bytes``).
* Generations take a *generation slot* (``max_waiting_generations``) and run in their own lane,
  under their own lock (``SearchPipeline.separate_generation``), so searches never wait behind one.
* Every wait for a lock is bounded by ``queue_timeout_s``; past it the request is answered 503.

Endpoints run in the server's thread pool, so these are plain thread primitives.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from unifashion.serving.errors import ApiError


class _Slots:
    """A counter of at most ``size`` holders; taking one never waits."""

    def __init__(self, size: int):
        self.size = size
        self.taken = 0
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        with self._lock:
            if self.taken >= self.size:
                return False
            self.taken += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.taken -= 1


class Admission:
    def __init__(self, *, max_waiting_images: int, decode_slots: int, max_waiting_generations: int,
                 queue_timeout_s: float, retry_after_s: int):
        self._images = _Slots(max_waiting_images)
        self._generations = _Slots(max_waiting_generations)
        self._decoding = threading.BoundedSemaphore(decode_slots)
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s

    @property
    def images_waiting(self) -> int:
        """Requests holding an image slot now (decoding, waiting for the model, or using it)."""
        return self._images.taken

    def _busy(self, message: str) -> ApiError:
        return ApiError(503, "busy", f"{message}; retry after {self.retry_after_s} s",
                        headers={"Retry-After": str(self.retry_after_s)})

    @contextmanager
    def _slot(self, slots: _Slots, what: str) -> Iterator[None]:
        if not slots.try_take():
            raise self._busy(f"{slots.size} {what} are already waiting for the model")
        try:
            yield
        finally:
            slots.give_back()

    def image_slot(self):
        """Held from before an upload is decoded until its request is done with the model."""
        return self._slot(self._images, "requests with images")

    def generation_slot(self):
        return self._slot(self._generations, "generations")

    @contextmanager
    def decoding(self) -> Iterator[None]:
        if not self._decoding.acquire(timeout=self.queue_timeout_s):
            raise self._busy(f"no image could be decoded within {self.queue_timeout_s:g} s")
        try:
            yield
        finally:
            self._decoding.release()

    @contextmanager
    def turn(self, lock) -> Iterator[None]:
        """Hold ``lock`` (the model's, re-entrant: the pipeline takes it again inside), waiting at
        most ``queue_timeout_s`` for it."""
        if not lock.acquire(timeout=self.queue_timeout_s):
            raise self._busy(f"the model stayed busy for {self.queue_timeout_s:g} s")
        try:
            yield
        finally:
            lock.release()
