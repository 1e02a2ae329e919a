"""Processes and determinism: where this process runs (DDP rank, device), the RNG states a
checkpoint saves, and the checks that DDP ranks agree."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from asrflow.train.rendezvous import loopback_collectives


@dataclass(frozen=True)
class Placement:
    """This process in the run: torchrun's ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (1/0/0 alone)."""

    world: int
    rank: int
    device: torch.device

    @property
    def master(self) -> bool:
        """Rank 0 logs, evaluates and writes checkpoints."""
        return self.rank == 0


def place(device: str, threads: int, seed: int) -> Placement:
    """Join the process group (gloo on CPU, NCCL on GPUs) when torchrun started several
    processes, pick the device (``device``: auto | cpu | cuda), set torch's CPU threads
    (0 = the cores shared among local ranks) and seed every RNG; CPU runs are deterministic."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if world > 1:
        loopback_collectives(world, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(not use_cuda)
    return Placement(world, rank, torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"))


def rng_state() -> dict[str, Any]:
    """Every RNG training draws from, as tensors and plain values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "random": [version, torch.tensor(internal, dtype=torch.int64), py_gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["random"]
    random.setstate((version, tuple(internal.tolist()), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (a collective call when ``world`` > 1)."""
    if world == 1:
        return [rng_state()]
    rngs: list[Any] = [None] * world
    dist.all_gather_object(rngs, rng_state())
    return rngs


def all_finite(loss: torch.Tensor, world: int) -> bool:
    """Whether the loss is finite on every rank: all skip a step together, or DDP's gradient
    all-reduce would wait forever."""
    ok = torch.tensor([1.0 if torch.isfinite(loss) else 0.0], device=loss.device)
    if world > 1:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def check_epoch_coverage(seen: list[int], n: int, world: int, epoch: int, log=None) -> None:
    """Across ranks, every training utterance was seen exactly once this epoch (else raise)."""
    if world == 1:
        everyone = seen
    else:
        gathered: list[list[int]] = [[] for _ in range(world)]
        dist.all_gather_object(gathered, seen)
        everyone = [i for part in gathered for i in part]
    if len(everyone) != n or len(set(everyone)) != n:
        raise RuntimeError(f"epoch {epoch + 1}: {len(everyone)} utterances seen ({len(set(everyone))} distinct) "
                           f"across {world} ranks, expected each of {n} exactly once")
    if log and world > 1:
        log(f"epoch {epoch + 1}: {n} utterances, each seen exactly once across {world} ranks")


def check_ranks_agree(model: nn.Module, log=None) -> None:
    """DDP invariant: every rank ends with bit-identical parameters (else raise).

    Parameters only: batch-norm running statistics are rank-local between forward passes
    (DDP broadcasts rank 0's at the start of each one), and rank 0's are the ones saved.
    """
    h = hashlib.sha256()
    for t in model.parameters():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    digests: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different parameters: {digests}")
    if log:
        log(f"parameters identical across {len(digests)} ranks (sha256 {digests[0][:16]})")
