r"""Several processes on JAX's own runtime: start-up, global arrays, gathering results.

After :func:`initialize` (a thin wrapper of :func:`jax.distributed.initialize`) every process
runs the same program (multi-controller JAX): ``jax.devices()`` lists the devices of *all*
processes, ``jax.local_devices()`` the process's own. probkit uses that in two places:

* :func:`probkit.inference.hmc.run` with ``chain_method="parallel"`` shards the chains over the
  devices of all processes and gathers the draws back, so every process holds all chains;
* :func:`probkit.inference.optimize.run` (and with it PFN and neural-process training) keeps
  the parameters replicated on all devices while the loss shards its batch over them
  (:func:`shard_batch`); only process 0 writes the checkpoint.

The helpers here move pytrees between the two views of an array: :func:`to_global` turns
identical host copies (every process computed the same value from the same key) into one global
array, checking once that the copies agree; :func:`to_local` turns a global array back into a
process-local one (a gather where it is sharded). On one process :func:`to_local` returns its
input and :func:`to_global` is ``jax.device_put``.

Examples
--------
On one process nothing changes:

>>> import jax.numpy as jnp
>>> from probkit.inference import distributed
>>> distributed.is_multiprocess(), distributed.is_main_process()
(False, True)
>>> distributed.to_local(distributed.to_global({"w": jnp.ones(2)}, None))["w"].tolist()
[1.0, 1.0]

Two processes on one machine (run one command per process, ``PID`` = 0 and 1):

>>> distributed.initialize("127.0.0.1:12355", num_processes=2,
...                        process_id=PID)  # doctest: +SKIP
>>> len(jax.devices()), len(jax.local_devices())  # doctest: +SKIP
(2, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from probkit import _io
from probkit._checks import check_choice

__all__ = ["initialize", "is_multiprocess", "is_main_process", "data_mesh", "shard_batch",
           "to_global", "to_local", "barrier", "from_main"]


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               local_device_ids: int | Sequence[int] | None = None,
               cluster_detection_method: str | None = None, cpu_collectives: str = "gloo",
               initialization_timeout: int = 300) -> None:
    """Join a multi-process JAX run (call it first, before any other JAX call, and before
    importing :mod:`probkit.inference.hmc`: BlackJAX computes at import).

    A thin wrapper of :func:`jax.distributed.initialize` that first selects the CPU
    collectives (``jax_cpu_collectives_implementation``), so that processes on CPUs exchange
    data too (gloo over TCP by default; ``"mpi"`` needs an MPI library). With no arguments JAX
    detects the cluster (SLURM, Open MPI, Kubernetes, Cloud TPU; ``cluster_detection_method=
    "mpi4py"`` for any MPI launcher).

    Parameters
    ----------
    coordinator_address : str, optional
        ``host:port`` of process 0, reachable from every process.
    num_processes : int, optional
        Number of processes.
    process_id : int, optional
        This process's index, ``0 .. num_processes - 1``.
    local_device_ids : int or sequence of int, optional
        Restrict this process to these local accelerators.
    cluster_detection_method : str, optional
        JAX's name of the environment to read the three numbers from (``"mpi4py"``,
        ``"slurm"``, ``"ompi"``, or ``"deactivate"``); by default every one JAX knows is tried.
    cpu_collectives : {"gloo", "mpi"}
        Cross-process collectives of the CPU backend.
    initialization_timeout : int
        Seconds to wait for all processes to connect.

    Raises
    ------
    ValueError
        An unknown ``cpu_collectives``.
    RuntimeError
        From JAX: called twice, or after JAX already ran a computation.

    Examples
    --------
    >>> from probkit.inference import distributed
    >>> distributed.initialize("10.0.0.1:12355", num_processes=4,
    ...                        process_id=0)  # doctest: +SKIP
    """
    check_choice("cpu_collectives", cpu_collectives, ("gloo", "mpi"))
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   local_device_ids=local_device_ids,
                                   cluster_detection_method=cluster_detection_method,
                                   initialization_timeout=initialization_timeout)
    except RuntimeError as err:
        if "before any JAX" not in str(err):
            raise
        raise RuntimeError(f"{err} Importing BlackJAX starts JAX: call initialize before "
                           "importing probkit.inference.hmc, probkit.inference.sgmcmc or the "
                           "fBNN family.") from None


def is_multiprocess() -> bool:
    """True when several JAX processes run together (after :func:`initialize`)."""
    return jax.process_count() > 1


def is_main_process() -> bool:
    """True on process 0 (the one that writes files and shows progress bars)."""
    return jax.process_index() == 0


def data_mesh() -> Mesh:
    """A one-axis mesh ``("data",)`` over ``jax.devices()`` (the devices of all processes)."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def shard_batch(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """Inside ``jit``: constrain the leading (batch) axis of ``arrays`` to be split over
    :func:`data_mesh` (data parallelism).

    Nothing changes on one device, or when the batch does not split evenly over the devices
    (the computation then runs replicated, with the same result).
    """
    n = jax.device_count()
    if n == 1 or any(a.shape[0] % n for a in arrays):
        return arrays
    sharding = NamedSharding(data_mesh(), PartitionSpec("data"))
    return tuple(jax.lax.with_sharding_constraint(a, sharding) for a in arrays)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host(x) -> np.ndarray:
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def to_global(tree: Any, sharding: Sharding | None) -> Any:
    """Global arrays, laid out by ``sharding``, from identical copies on every process.

    Every array leaf (NumPy or JAX, typed PRNG keys too) must hold the same value on every
    process, as it does when all processes compute it from the same key and data; one
    collective compares a fingerprint of all leaves, then each process fills its own devices'
    shards from its copy. Other leaves are returned as they are. On one process this is
    ``jax.device_put`` of the array leaves (nothing with ``sharding=None``). Every process must
    call it.

    Parameters
    ----------
    tree : pytree
    sharding : Sharding or None
        E.g. ``NamedSharding(mesh, PartitionSpec())`` (replicated) or
        ``NamedSharding(mesh, PartitionSpec("chain"))`` (split on the leading axis).

    Raises
    ------
    ValueError
        If the processes hold different values.
    """
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array | np.ndarray)]
    if not is_multiprocess():
        if sharding is not None:
            for i in arrays:
                leaves[i] = jax.device_put(leaves[i], sharding)
        return jax.tree.unflatten(treedef, leaves)
    host = [_host(leaves[i]) for i in arrays]
    digest = np.frombuffer(bytes.fromhex(_io.fingerprint(host)), np.uint32)
    try:
        multihost_utils.assert_equal(digest)
    except AssertionError:
        raise ValueError("to_global: the processes hold different values (each process must "
                         "compute its copy from the same key and data)") from None
    for i, h in zip(arrays, host, strict=True):
        x = leaves[i]
        g = jax.make_array_from_callback(h.shape, sharding, lambda idx, h=h: h[idx])
        leaves[i] = jax.random.wrap_key_data(g, impl=jax.random.key_impl(x)) if _is_key(x) else g
    return jax.tree.unflatten(treedef, leaves)


def to_local(tree: Any) -> Any:
    """Process-local copies of the global arrays in ``tree`` (the inverse of
    :func:`to_global`).

    A replicated array gives this process's own shard (no communication); a sharded one is
    gathered from all processes (every process must then call it). Fully addressable arrays and
    other leaves are returned as they are.
    """

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        data = jax.random.key_data(x) if _is_key(x) else x
        full = jax.numpy.asarray(multihost_utils.process_allgather(data, tiled=True))
        return jax.random.wrap_key_data(full, impl=jax.random.key_impl(x)) if _is_key(x) else full

    return jax.tree.map(one, tree)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (a no-op on one process)."""
    if is_multiprocess():
        multihost_utils.sync_global_devices(name)


def from_main(value: Any) -> Any:
    """Process 0's value of a pytree of arrays or numbers, on every process (a no-op on one
    process); for decisions that must agree, such as a step count estimated from a clock."""
    if not is_multiprocess():
        return value
    return multihost_utils.broadcast_one_to_all(value)
