"""Multi-controller start-up: explicit coordinator flags, or JAX's own cluster auto-detection."""

import os
from typing import Optional

import jax
from absl import logging

# Environment variables by which JAX's cluster detection recognises a multi-process job.
_CLUSTER_HINTS = ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                  "MEGASCALE_COORDINATOR_ADDRESS")


def _looks_multi_process() -> bool:
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    return any(int(os.environ.get(k, "1") or 1) > 1
               for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))


def initialize(coordinator_address: Optional[str], num_processes: Optional[int],
               process_id: Optional[int]) -> None:
    """All three flags → explicit cluster; none → auto-detect a cluster, else single-process."""
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("--coordinator_address, --num_processes and --process_id go together: "
                         f"got coordinator_address={coordinator_address!r}, "
                         f"num_processes={num_processes!r}, process_id={process_id!r}.")
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        # CPU collectives across processes need an implementation; gloo ships with jaxlib.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if all(given):
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif _looks_multi_process():
        jax.distributed.initialize()  # JAX reads the cluster (TPU pod, SLURM, Open MPI) itself.
    else:
        return
    logging.info("Process %d of %d.", jax.process_index(), jax.process_count())
