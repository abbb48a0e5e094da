"""Everything a training run is built from: the process group and device, seeds and RNG state,
the networks (trained, frozen critics, weight averages), the optimiser and the data loaders.

:class:`train.trainer.Trainer` calls these once, at set-up; :mod:`train.pipeline` chains steps.
"""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from prep.shards import ShardSet
from train import extensions as E
from train.config import RunConfig
from train.data import (
    EpochBatchSampler,
    FixedBatchSampler,
    WindowDataset,
    make_loader,
    track_frame_counts,
    validation_windows,
)
from train.model import ScoreCriticModel, build_model, load_model
from train.steps import ANCHOR, StepSpec

__all__ = [
    "TrainingError",
    "Dist",
    "setup_distributed",
    "configure_cpu_threads",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "load_pretrained",
    "Networks",
    "build_networks",
    "build_optimizer",
    "Loaders",
    "build_loaders",
    "check_stem_access",
]


class TrainingError(RuntimeError):
    """A run cannot start or continue (missing checkpoint, bad shards, non-finite loss)."""


# --- process group, threads, seeds -----------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """Process-group facts: this rank, the world size, the device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: str) -> Dist:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1) and pick the device.

    NCCL on CUDA, gloo on CPU; rank r uses ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but torch sees no CUDA device")
    dev = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    return Dist(rank, world, dev)


def configure_cpu_threads(device: torch.device, num_workers: int) -> int:
    """Set torch's intra-op threads for CPU training so that this machine's training processes
    and their DataLoader workers together use at most one thread per core; returns the count.

    torch defaults to one thread per core in *every* process; with DataLoader workers, DDP
    processes or any other load, its OpenMP threads then wait on descheduled peers at every
    parallel region (benchmarks/README.md: step 3 ran 4.7x slower with 7x the CPU on 2
    threads than on 1 under load). An explicit ``OMP_NUM_THREADS`` (torchrun sets 1 when launching
    several processes) is left alone; on CUDA torch's default is kept.
    """
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = max(1, cores // processes - num_workers)
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (weights initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states as plain tensors/lists (``torch.load(weights_only=True)`` reads them)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])




# --- checkpoints of earlier steps ------------------------------------------------------------


def load_pretrained(
    path: Path, kind: str, instruments: list[str], command: str
) -> tuple[ScoreCriticModel, str]:
    """Load the ``kind`` network an earlier run wrote, checking it fits these shards.

    Args:
        path: its checkpoint.
        kind: "transcriptor", "separator" or "classifier".
        instruments: the shards' instruments.
        command: the command that makes it, for the error message.

    Returns:
        (model, the recipe recorded in the checkpoint, "" when it has none).
    """
    if not path.is_file():
        raise TrainingError(
            f"no {kind} checkpoint at {path}: run `{command}` first "
            f"(or point to one with --{kind} PATH)"
        )
    model = load_model(path, expected_kind=kind)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    stored = payload.get("instruments")
    if stored is not None and list(stored) != list(instruments):
        raise TrainingError(
            f"{path} was trained on instruments {stored}, the shards hold {instruments}"
        )
    return model, str(payload.get("recipe", ""))


# --- networks ---------------------------------------------------------------------------------


class Dispatch(nn.Module):
    """Lets a DDP wrapper call a model method other than ``forward`` (``logits``, ...)."""

    def __init__(self, model: ScoreCriticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, method: str = "forward") -> Tensor:
        return getattr(self.model, method)(x)




@dataclass
class Networks:
    """The networks of one run.

    Attributes:
        modules: every bare model: the trained ones, the frozen critic, the anchor.
        nets: what the training forward calls (a DDP wrapper for trained nets under torchrun).
        averaged: the weight averages of the trained nets (the ``weight_average`` extension).
    """

    modules: dict[str, ScoreCriticModel]
    nets: dict[str, nn.Module]
    averaged: dict[str, AveragedModel]


def build_networks(
    spec: StepSpec,
    config: RunConfig,
    init: dict[str, ScoreCriticModel],
    env: Dist,
) -> Networks:
    """Trained nets (from ``init`` or fresh), the frozen critic and the anchor, on the device.

    Args:
        spec: the step.
        config: the run's settings (``model``, ``anchor``, ``weight_average``).
        init: pretrained networks by name (consumed).
        env: the device and world size.
    """
    init = dict(init)
    if config.anchor.weight > 0:
        if spec.name != "step3" or "transcriptor" not in init:
            raise TrainingError(f"anchor.weight > 0 applies to step 3, not {spec.name}")
        init[ANCHOR] = copy.deepcopy(init["transcriptor"])  # before training moves it
    modules: dict[str, ScoreCriticModel] = {}
    for name in spec.trained:
        modules[name] = init.pop(name, None) or build_model(name, config.model)
    frozen = ([spec.critic] if spec.critic else []) + ([ANCHOR] if ANCHOR in init else [])
    for name in frozen:
        if name not in init:
            raise TrainingError(f"{spec.name} needs a pretrained {name} network, none given")
        modules[name] = init.pop(name).eval().requires_grad_(False)
    for module in modules.values():
        module.to(env.device)
    nets: dict[str, nn.Module] = dict(modules)
    if env.world > 1:
        for name in spec.trained:
            nets[name] = DistributedDataParallel(
                Dispatch(modules[name]),
                device_ids=[env.device] if env.device.type == "cuda" else None,
            )
    averaged = {}
    for name in spec.trained:
        average = E.averaged_copy(config.weight_average, modules[name])
        if average is not None:
            averaged[name] = average
    return Networks(modules, nets, averaged)


def build_optimizer(
    spec: StepSpec, config: RunConfig, modules: dict[str, ScoreCriticModel], world_size: int = 1
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """Adam over the trained nets, one parameter group each (``critic_lr`` sets the step-3
    transcriptor's), and ReduceLROnPlateau on the validation loss (paper §3.2). The learning
    rate follows the global batch by ``train.lr_batch_rule`` (:meth:`TrainConfig.scaled_lr`)."""
    lr = config.train.scaled_lr(world_size)
    optimizer = torch.optim.Adam(
        [
            {
                "params": list(modules[name].parameters()),
                "lr": E.critic_lr(config.critic_lr, lr, name, spec.trained),
            }
            for name in spec.trained
        ],
        lr=lr,
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.train.lr_decay_factor, patience=config.train.lr_patience
    )
    return optimizer, scheduler


# --- data -------------------------------------------------------------------------------------


def check_stem_access(spec: StepSpec, *shard_sets: ShardSet) -> None:
    """Weakly supervised steps never see a stem; the supervised reference needs every one.

    A step reads stems only when its :attr:`StepSpec.fields` name them (``supervised``). Every
    other step learns from mixtures and scores alone, and picks its checkpoint on them too, so
    its train and validation shards must hold no stem at all: then no code path, ours or a
    user's extension, can let one leak into training or model selection. ``prep build-shards``
    stores stems for the test split only by default (``--stems test``), which is what these
    steps accept; ``--stems all`` builds the supervised reference's shards.

    Raises:
        TrainingError: naming the shard folder, the split, a track and the fix.
    """
    needs_stems = "stems" in spec.fields
    for shards in shard_sets:
        mode = shards.manifest.source.get("stems_mode", "unknown")
        with_stems = [t.track_id for t in shards.tracks if t.has_stems]
        without = [t.track_id for t in shards.tracks if not t.has_stems]
        if needs_stems and without:
            raise TrainingError(
                f"{shards.root}: the {shards.split} split holds no stems for {len(without)} of "
                f"its {len(shards.tracks)} tracks (e.g. {without[0]}; built with --stems {mode}),"
                f" and the {spec.name} system trains on them. Build its shards with stems for "
                "every split: `prep build-shards --stems all --out data-stems/`, then "
                "`train supervised --shards data-stems/`"
            )
        if not needs_stems and with_stems:
            raise TrainingError(
                f"{shards.root}: the {shards.split} split stores stems for {len(with_stems)} of "
                f"its {len(shards.tracks)} tracks (e.g. {with_stems[0]}; built with --stems "
                f"{mode}), and {spec.name} is weakly supervised: it must learn and choose its "
                "checkpoints from mixtures and scores alone. Train it on shards without train "
                "or validation stems: `prep build-shards --stems test` (the default) or "
                "`--stems none`"
            )


@dataclass
class Loaders:
    """Training windows (random, by seed, epoch, step and rank) and fixed validation windows."""

    sampler: EpochBatchSampler
    train: torch.utils.data.DataLoader
    validation: torch.utils.data.DataLoader


def build_loaders(
    spec: StepSpec, config: RunConfig, train_set: ShardSet, val_set: ShardSet, env: Dist
) -> Loaders:
    """The loaders of a run; each has its own generator (never the global RNG: resume
    exactness), and validation windows are shared out over the ranks."""
    cfg = config.train
    pin = env.device.type == "cuda"
    sampler = EpochBatchSampler(
        track_frame_counts(train_set), cfg.batch_size, cfg.steps_per_epoch, cfg.seed, env.rank
    )
    # On a GPU the workers deliver stored batches and to_device decodes them there (the same
    # batch bit for bit, ~15x less worker CPU per window: benchmarks/perf/loading.py).
    on_device = env.device.type == "cuda"
    train_loader = make_loader(
        WindowDataset(train_set, spec.fields, cfg.window_frames, decode_on_device=on_device),
        sampler,
        cfg.num_workers,
        pin,
    )
    val = validation_windows(val_set, cfg.val_windows, cfg.seed)
    val_loader = make_loader(
        WindowDataset(val_set, spec.fields, cfg.window_frames, decode_on_device=on_device),
        FixedBatchSampler(val[env.rank :: env.world], cfg.batch_size),
        0,
        pin,
    )
    return Loaders(sampler, train_loader, val_loader)
