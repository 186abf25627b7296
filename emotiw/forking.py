"""The start method of this package's process pools, made safe for OpenCV.

The pools fork (as DataLoader workers do): it works from any ``__main__`` (stdin, notebooks) and starts fast. But
OpenCV's worker threads do not survive a fork: once the parent has run a parallel cv2 call, a forked child that
touches cv2's thread pool (``cv2.setNumThreads`` included) waits forever for threads that only exist in the parent
(seen as ``stage=faces`` hanging after ``stage=make_data`` and ``stage=cnn`` in one process). So the parent's cv2
pool is stopped while the children live, and restored after.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.context import BaseContext


@contextmanager
def fork_context() -> Iterator[BaseContext]:
    """A ``fork`` context (``spawn`` where fork is missing) with OpenCV's parent-side thread pool stopped."""
    import cv2

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # joins the pool's threads, so no child inherits them half-alive
    try:
        yield multiprocessing.get_context(method)
    finally:
        cv2.setNumThreads(threads)
