"""Orbax checkpoints of the full `AdvSegState` in `workdir/checkpoints/<step>`.

Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves no half-written step that `latest_step()` could pick up.
"""

import os
from typing import Optional

import jax
import ml_collections
import orbax.checkpoint as ocp


def manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def save(checkpoints: ocp.CheckpointManager, step: int, state) -> None:
    checkpoints.save(step, args=ocp.args.StandardSave(state), force=True)


def restore(checkpoints: ocp.CheckpointManager, state, step: Optional[int] = None):
    """`state` with values from checkpoint `step` (default: latest); `state` if there is none.

    `state` supplies the structure, shapes and shardings, so the restored arrays land where a
    fresh state would (replicated over the current mesh, whatever the saving run's topology).
    """
    step = checkpoints.latest_step() if step is None else step
    if step is None:
        return state
    if step not in checkpoints.all_steps():
        raise ValueError(f"No checkpoint for step {step} in {checkpoints.directory}; "
                         f"available steps: {sorted(checkpoints.all_steps())}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return checkpoints.restore(step, args=ocp.args.StandardRestore(abstract))
