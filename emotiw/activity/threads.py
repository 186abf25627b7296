"""How many CPU threads the activity model's numerical work may use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads in torch and in numpy/scikit-learn's BLAS and OpenMP pools (``None``: leave
    them). The SAE's matmuls (batches of 100 blocks) and k-means are too small to share out: on a busy 2-core
    machine two spinning threads make an SAE step many times slower (README, Benchmarks)."""
    if n is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        with threadpool_limits(limits=int(n)):
            yield
    finally:
        torch.set_num_threads(before)
