"""Settings of ``medplug batch --engine ray`` (importable without Ray installed)."""

from __future__ import annotations

from dataclasses import dataclass

RAY_MISSING = (
    'the ray engine needs Ray (Ray Data): pip install "medplug[ray]" (or run with --engine local)'
)


@dataclass
class RayOptions:
    """Where the cluster is and how to size the stages on it.

    ``address``: None starts a private Ray on this machine for the run (CPUs:
    ``--workers`` decode/write slots plus the actors'); ``"auto"`` joins the
    cluster ``ray start`` made on this machine; ``"ray://HOST:10001"`` a remote
    head through Ray Client.
    """

    address: str | None = None
    actors: int = 1  # inference actors; each loads the plugins once
    actor_cpus: float = 1.0  # CPUs each actor reserves (and its torch threads)
    actor_gpus: float = 0.0  # GPUs each actor reserves (0: CPU inference)
    task_cpus: float = 1.0  # CPUs each decode or write task reserves
    decode_memory_mb: int = 1024  # memory each decode task reserves (a CT and its copies)
    decode_tasks: int | None = None  # decode tasks at once (None: Ray's backpressure decides)
    object_store_mb: int | None = None  # private Ray only: object store size
