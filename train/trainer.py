"""The training loop of every system: step 1, 2, 3 (paper §2), the classifier baseline and the
supervised separator.

One loop, five small strategies. A :class:`StepSpec` says which networks are trained, which one
is a frozen critic, which shard fields a batch needs, which network's loss is the validation
objective (the one ``best.pt`` holds), and a ``losses(ctx, batch)`` function returning, for
every trained network, its total loss and its terms.

Gradient routing (step 3): the separator is trained with L_sep (eq. 8) through the transcriptor
used as a critic with its parameters frozen for that pass; the transcriptor is trained with
L_TL-3 (eq. 11) on *detached* separated outputs. The two totals therefore touch disjoint
parameter sets and one ``backward`` of their sum updates each network with its own loss only.

Training follows paper §3.2: Adam (lr 0.001), ReduceLROnPlateau(0.5, patience 2) on the
validation loss, early stop after 10 epochs without improvement, gradient clipping per network.
Windows come from :mod:`train.data` and depend on (seed, epoch, step, rank) only, so a resumed
run (``last.pt``: weights, optimiser, scheduler, epoch, best, patience, RNG states) ends bit-equal
to an uninterrupted one on CPU. Under ``torchrun`` every rank trains a DDP replica on its own
windows; rank 0 alone logs (dvclive, tqdm) and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from prep.atomic import atomic_write, atomic_write_text
from prep.faults import fault_point
from prep.features import stft
from prep.shards import ShardSet
from train import losses as L
from train.config import LossConfig, ModelConfig, TrainConfig, to_dict
from train.data import (
    EpochBatchSampler,
    FixedBatchSampler,
    WindowDataset,
    make_loader,
    stop_workers,
    to_device,
    track_frame_counts,
    validation_windows,
)
from train.model import (
    CHECKPOINT_FORMAT_VERSION,
    ScoreCriticModel,
    build_model,
    load_model,
    save_checkpoint,
)

STEPS = ("step1", "step2", "step3", "baseline", "supervised")
ANCHOR = "anchor"  # step 3's frozen copy of the step-1 transcriptor (LossConfig.anchor_weight)
Terms = dict[str, Tensor]
NetLosses = dict[str, tuple[Tensor, Terms]]  # trained net -> (total, {term: value})


class TrainingError(RuntimeError):
    """A run cannot start or continue (missing checkpoint, bad shards, non-finite loss)."""


# ---------------------------------------------------------------------------------------------
# Step strategies
# ---------------------------------------------------------------------------------------------


@dataclass
class StepContext:
    """What a step's loss function sees: networks, loss settings and per-step randomness."""

    nets: dict[str, nn.Module]  # training forward (DDP wrapper for trained nets)
    modules: dict[str, ScoreCriticModel]  # the bare models
    loss_cfg: LossConfig
    class_weights: Tensor  # [I] instrument weights (paper §3.2)
    autocast: Callable[[], contextlib.AbstractContextManager]
    generator: torch.Generator | None = None  # AML remix draws (seeded per step)
    averaged: dict[str, nn.Module] = field(default_factory=dict)  # EMA copies of trained nets

    def forward(self, name: str, method: str, x: Tensor) -> Tensor:
        """Run ``name`` (through its DDP wrapper when trained) under autocast; float32 out."""
        net = self.nets[name]
        with self.autocast():
            if method == "forward":
                out = net(x)
            elif isinstance(net, DistributedDataParallel):
                out = net(x, method=method)  # see _Dispatch
            else:
                out = getattr(net, method)(x)
        return out.float()

    @torch.no_grad()
    def teacher(self, name: str, x: Tensor) -> Tensor:
        """Run the weight-averaged copy of ``name`` (TrainConfig.ema_decay); no gradients."""
        if name not in self.averaged:
            raise TrainingError(f"no weight-averaged {name} to teach with: set ema_decay > 0")
        with self.autocast():
            return self.averaged[name](x).float()

    def critic(self, name: str, method: str, x: Tensor, averaged: bool = False) -> Tensor:
        """Run ``name`` (its weight average if ``averaged``) as a critic: gradients reach ``x``
        but not the critic's parameters."""
        if averaged and name not in self.averaged:
            raise TrainingError(f"no weight-averaged {name} to criticise with: set ema_decay > 0")
        module = self.averaged[name].module if averaged else self.modules[name]
        with _frozen(module), self.autocast():
            return getattr(module, method)(x).float()


@dataclass(frozen=True)
class StepSpec:
    """One training system: which nets train, which is the frozen critic, what it minimises."""

    name: str
    trained: tuple[str, ...]
    losses: Callable[[StepContext, dict[str, Tensor]], NetLosses]
    fields: tuple[str, ...] = ("spec", "roll")
    critic: str | None = None  # loaded from a checkpoint, eval mode, requires_grad False
    objective: str = ""  # trained net whose total is the validation loss (saved as best.pt)
    also_saved: dict[str, str] = field(default_factory=dict)  # net -> extra file at best epoch
    # The separator's critic is trained too, so a frozen step-1 copy can be its anchor.
    takes_anchor: bool = False


def _separate(ctx: StepContext, X: Tensor) -> Tensor:
    """S_hat = M(X) * X [B, I, F, T] (paper §2: masking the mixture magnitude)."""
    return ctx.forward("separator", "forward", X) * X[:, None]


def _separator_loss(ctx: StepContext, batch: dict[str, Tensor], S_hat: Tensor) -> tuple:
    """L_sep (eq. 8): each S_hat_i scored by the transcriptor as a critic, plus mixture terms
    (and by the frozen step-1 transcriptor too when ``anchor_weight`` > 0, and gamma L_own on
    an owned-bin remix when ``owned_remix_weight`` > 0)."""
    cfg = ctx.loss_cfg
    z_each = ctx.critic(  # [B, I_src, I, 88, T]
        "transcriptor", "logits_of_sources", S_hat, averaged=cfg.averaged_critic
    )
    z_anchor = None
    if cfg.anchor_weight > 0:
        z_anchor = ctx.critic(ANCHOR, "logits_of_sources", S_hat)  # [B, I_src, I, 88, T]
    X = batch["X"]
    total, terms = L.separation_loss(
        z_each, batch["Y"], X, S_hat, batch.get("A"), ctx.class_weights, cfg, logits_anchor=z_anchor
    )
    if cfg.owned_remix_weight > 0:
        donors = L.remix_indices(X.shape[0], S_hat.shape[1], ctx.generator, X.device)  # [B, I]
        fill = None  # [B, I, F, T]: the separated sources outside the owned bins
        if cfg.owned_remix_sources != "owned":
            teacher = cfg.owned_remix_teacher
            fill = ctx.teacher("separator", X) * X[:, None] if teacher else S_hat
        owned = cfg.owned_remix_sources != "separated"
        others = cfg.owned_remix_sources != "owned+separated-unowned"
        X_syn, S_syn = L.owned_bin_remix(  # [B, F, T], [B, I, F, T]
            X, batch["A"], donors, fill, owned, fill_others_owned=others,
            max_shift_semitones=cfg.owned_remix_shift,
        )
        l_own = L.owned_bin_remix_loss(_separate(ctx, X_syn), S_syn, X_syn, cfg.mixture_norm)
        total = total + cfg.owned_remix_weight * l_own
        terms = {**terms, "owned": l_own.detach(), "total": total.detach()}
    return total, terms


def _step1(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    z = ctx.forward("transcriptor", "logits", batch["X"])  # [B, I, 88, T]
    return {
        "transcriptor": L.transcription_loss_step1(z, batch["Y"], ctx.class_weights, ctx.loss_cfg)
    }


def _step2(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    return {"separator": _separator_loss(ctx, batch, _separate(ctx, batch["X"]))}


def _step3(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    cfg, X, Y = ctx.loss_cfg, batch["X"], batch["Y"]
    S_hat = _separate(ctx, X)
    sep = _separator_loss(ctx, batch, S_hat)
    # The transcriptor's loss (eq. 11) sees detached outputs: it must not move the separator.
    S_fixed = S_hat.detach()
    B, n_inst = S_fixed.shape[:2]
    inputs = [X]
    if cfg.use_atl:
        inputs.append(S_fixed.flatten(0, 1))
    Y_remix = None
    if cfg.use_aml:
        donors = L.remix_indices(B, n_inst, ctx.generator, X.device)  # [B, I]: a_i per remix
        X_remix, Y_remix = L.remix(S_fixed, Y, donors)
        inputs.append(X_remix)
    z = ctx.forward("transcriptor", "logits", torch.cat(inputs))  # one pass over all inputs
    z_mix, rest = z[:B], z[B:]
    z_each = z_remix = None
    if cfg.use_atl:
        z_each, rest = rest[: B * n_inst].unflatten(0, (B, n_inst)), rest[B * n_inst :]
    if cfg.use_aml:
        z_remix = rest
    trans = L.transcription_loss_step3(
        z_mix, Y, ctx.class_weights, cfg, logits_remix=z_remix, Y_remix=Y_remix, logits_each=z_each
    )
    return {"separator": sep, "transcriptor": trans}


def _classifier(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    z = ctx.forward("classifier", "logits", batch["X"])  # [B, I, T]
    weights = ctx.class_weights if ctx.loss_cfg.use_weights else None
    total = L.classifier_loss(z, batch["activity"].float(), weights)
    return {"classifier": (total, {"activity": total.detach()})}


def _baseline(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    S_hat = _separate(ctx, batch["X"])
    z_each = ctx.critic("classifier", "logits_of_sources", S_hat)  # [B, I_src, I, T]
    return {
        "separator": L.classifier_separation_loss(
            z_each, batch["activity"].float(), batch["X"], S_hat, ctx.class_weights, ctx.loss_cfg
        )
    }


def _supervised(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    S_hat = _separate(ctx, batch["X"])
    S_true = stft(batch["stems"].float(), center=False).abs()  # [B, I, F, T], on the device
    total = L.supervised_loss(S_hat, S_true)
    return {"separator": (total, {"l1": total.detach()})}


_WITH_MASK = ("spec", "roll", "harmonic_mask")
SPECS: dict[str, StepSpec] = {
    "step1": StepSpec("step1", ("transcriptor",), _step1, objective="transcriptor"),
    "step2": StepSpec(
        "step2", ("separator",), _step2, _WITH_MASK, critic="transcriptor", objective="separator"
    ),
    "step3": StepSpec(
        "step3",
        ("separator", "transcriptor"),
        _step3,
        _WITH_MASK,
        objective="separator",
        also_saved={"transcriptor": "transcriptor.pt"},
        takes_anchor=True,
    ),
    "classifier": StepSpec(
        "classifier", ("classifier",), _classifier, ("spec", "activity"), objective="classifier"
    ),
    "baseline": StepSpec(
        "baseline",
        ("separator",),
        _baseline,
        ("spec", "activity"),
        critic="classifier",
        objective="separator",
    ),
    "supervised": StepSpec(
        "supervised", ("separator",), _supervised, ("spec", "stems"), objective="separator"
    ),
}


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` leave the autograd graph inside the block (critic pass)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# Distributed set-up, seeding, RNG state
# ---------------------------------------------------------------------------------------------


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
    parallel region (benchmarks/train.py: step 3 ran 4.7x slower with 7x the CPU on 2 threads
    than on 1 under load). An explicit ``OMP_NUM_THREADS`` (torchrun sets 1 when launching
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


# ---------------------------------------------------------------------------------------------
# Networks: building, loading, checkpoints
# ---------------------------------------------------------------------------------------------


def load_pretrained(
    path: Path, kind: str, instruments: list[str], command: str
) -> ScoreCriticModel:
    """Load the ``kind`` network an earlier step wrote, checking it fits these shards."""
    if not path.is_file():
        raise TrainingError(
            f"no {kind} checkpoint at {path}: run `train {command} --shards ...` first "
            f"(or point to one with --{kind} PATH)"
        )
    model = load_model(path, expected_kind=kind)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    stored = payload.get("instruments")
    if stored is not None and list(stored) != list(instruments):
        raise TrainingError(
            f"{path} was trained on instruments {stored}, the shards hold {instruments}"
        )
    return model


def _checkpoint_extra(spec: StepSpec, instruments: list[str], epoch: int, val: float) -> dict:
    return {"instruments": list(instruments), "step": spec.name, "epoch": epoch, "val_loss": val}


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    """``last.pt`` whole or not at all, also after a power cut or a full disk."""
    try:
        atomic_write(
            path, lambda f: torch.save(payload, f), fault="checkpoint-write",
            action="cannot save checkpoint",
        )
    except OSError as err:
        raise TrainingError(str(err)) from err


def _write_text_atomic(path: Path, text: str) -> None:
    """metrics.json, config.json whole or not at all: a kill never leaves a truncated JSON that
    a rerun would then fail to parse."""
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise TrainingError(str(err)) from err


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Run state saved in ``last.pt`` besides weights and optimiser."""

    epoch: int = 0  # next epoch to run
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: str = ""  # "early_stop" / "max_epochs" once done
    history: list[dict[str, float]] = field(default_factory=list)


class Meter:
    """Running means of named scalar terms."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, values: dict[str, float], weight: int = 1) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * weight
        self.count += weight

    def means(self) -> dict[str, float]:
        return {key: value / max(self.count, 1) for key, value in self.sums.items()}


def _flatten_losses(losses: NetLosses) -> dict[str, Tensor]:
    """{net/total, net/term...} as detached 0-d tensors (one host sync reads them all)."""
    flat = {}
    for net, (total, terms) in losses.items():
        flat.update({f"{net}/{key}": value for key, value in terms.items()})
        flat[f"{net}/total"] = total
    return flat


def _read_checked(losses: NetLosses, where: str) -> dict[str, float]:
    """Scalar values of every term; a non-finite one stops the run naming the term."""
    flat = _flatten_losses(losses)
    values = torch.stack([v.detach().float() for v in flat.values()]).tolist()
    out = dict(zip(flat, values, strict=True))
    bad = [key for key, value in out.items() if not math.isfinite(value)]
    if bad:
        raise TrainingError(
            f"non-finite loss at {where}: {', '.join(f'{k} = {out[k]}' for k in bad)}; "
            "stopped, the last checkpoint is the last good one"
        )
    return out


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class Trainer:
    """Trains one :class:`StepSpec`; ``fit()`` runs epochs until early stop or max_epochs."""

    def __init__(
        self,
        spec: StepSpec,
        shards_root: Path,
        train_cfg: TrainConfig,
        model_cfg: ModelConfig,
        loss_cfg: LossConfig,
        out: Path,
        *,
        init: dict[str, ScoreCriticModel] | None = None,
        resume: bool = False,
        progress: bool = True,
        dvclive: bool = True,
        env: Dist | None = None,
    ) -> None:
        self.spec, self.cfg, self.loss_cfg, self.out = spec, train_cfg, loss_cfg, Path(out)
        if not resume and (self.out / "last.pt").is_file():
            # checked before any set-up: a fresh run would overwrite it at its first epoch
            raise TrainingError(
                f"{self.out / 'last.pt'}: this folder holds a training state; pass --resume to "
                f"continue it, or give another --out (or remove the folder) to start over"
            )
        self.env = env or setup_distributed(train_cfg.device)
        self.threads = configure_cpu_threads(self.env.device, train_cfg.num_workers)
        self.progress_bar = progress and self.env.main
        try:  # checksums are verified at open: a bad shard stops the run here, named
            self.train_set = ShardSet(shards_root, "train")
            self.val_set = ShardSet(shards_root, "validation")
        except Exception as err:
            raise TrainingError(f"cannot use the shards under {shards_root}: {err}") from err
        self.instruments = list(self.train_set.instruments)
        self.model_cfg = replace(model_cfg, n_instruments=len(self.instruments))
        seed_everything(train_cfg.seed)
        init = dict(init or {})
        if loss_cfg.anchor_weight > 0 and ANCHOR not in init and "transcriptor" in init:
            init[ANCHOR] = copy.deepcopy(init["transcriptor"])  # before training moves it
        self.modules: dict[str, ScoreCriticModel] = {}
        for name in spec.trained:
            self.modules[name] = init.pop(name, None) or build_model(name, self.model_cfg)
        frozen = [spec.critic] if spec.critic else []
        if loss_cfg.anchor_weight > 0:
            if not spec.takes_anchor:
                raise TrainingError(f"anchor_weight > 0 applies to step 3, not {spec.name}")
            frozen.append(ANCHOR)
        for name in frozen:
            if name not in init:
                raise TrainingError(f"{spec.name} needs a pretrained {name} network, none given")
            critic = init.pop(name)
            critic.eval().requires_grad_(False)
            self.modules[name] = critic
        for module in self.modules.values():
            module.to(self.env.device)
        self.nets: dict[str, nn.Module] = dict(self.modules)
        if self.env.world > 1:
            for name in spec.trained:
                self.nets[name] = DistributedDataParallel(
                    _Dispatch(self.modules[name]),
                    device_ids=[self.env.device] if self.env.device.type == "cuda" else None,
                )
        self.averaged: dict[str, AveragedModel] = {}
        if train_cfg.ema_decay > 0:
            ema = get_ema_multi_avg_fn(train_cfg.ema_decay)
            for name in spec.trained:
                self.averaged[name] = AveragedModel(self.modules[name], multi_avg_fn=ema).eval()
        if loss_cfg.owned_remix_teacher and "separator" not in self.averaged:
            raise TrainingError(
                "owned_remix_teacher needs the weight-averaged separator: set ema_decay > 0"
            )
        if loss_cfg.averaged_critic and "transcriptor" not in self.averaged:
            raise TrainingError(
                "averaged_critic needs a weight-averaged transcriptor: step 3 with ema_decay > 0"
            )
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.modules[name].parameters()), "lr": self._lr(name)}
                for name in spec.trained
            ],
            lr=train_cfg.lr,
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=train_cfg.lr_decay_factor, patience=train_cfg.lr_patience
        )
        self.state = Progress()
        weights = torch.as_tensor(self.train_set.class_weights, dtype=torch.float32)
        use_bf16 = train_cfg.bf16 and self.env.device.type == "cuda"
        self.ctx = StepContext(
            self.nets,
            self.modules,
            loss_cfg,
            weights.to(self.env.device),
            autocast=lambda: torch.autocast(self.env.device.type, torch.bfloat16, enabled=use_bf16),
            averaged=dict(self.averaged),
        )
        pin = self.env.device.type == "cuda"
        frames = track_frame_counts(self.train_set)
        self.sampler = EpochBatchSampler(
            frames, train_cfg.batch_size, train_cfg.steps_per_epoch, train_cfg.seed, self.env.rank
        )
        # Own generator: the loader must not draw from the global RNG (resume exactness).
        self.train_loader = make_loader(
            WindowDataset(self.train_set, spec.fields, train_cfg.window_frames),
            self.sampler,
            train_cfg.num_workers,
            pin,
        )
        val = validation_windows(self.val_set, train_cfg.val_windows, train_cfg.seed)
        self.val_loader = make_loader(
            WindowDataset(self.val_set, spec.fields, train_cfg.window_frames),
            FixedBatchSampler(val[self.env.rank :: self.env.world], train_cfg.batch_size),
            0,
            pin,
        )
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load_last()
        self.live = None
        if self.env.main:
            self._write_config()
        if self.env.main and dvclive:
            from dvclive import Live  # imported late: it is slow to import

            self.live = Live(
                dir=str(self.out / "dvclive"),
                save_dvc_exp=False,
                dvcyaml=None,
                resume=resume,
                report=None,
            )

    def _lr(self, name: str) -> float:
        """The learning rate of trained net ``name``: a critic trained beside a separator runs
        at ``critic_lr_scale`` of it."""
        critic = name == "transcriptor" and "separator" in self.spec.trained
        return self.cfg.lr * (self.cfg.critic_lr_scale if critic else 1.0)

    # -- one step, one epoch -----------------------------------------------------------------

    def _step_generator(self, epoch: int, step: int) -> torch.Generator:
        seed = np.random.SeedSequence([self.cfg.seed, epoch, step, self.env.rank, 1])
        return torch.Generator().manual_seed(int(seed.generate_state(1)[0]))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of ``steps_per_epoch`` optimiser steps; mean terms, throughput, data wait."""
        for name in self.spec.trained:
            self.modules[name].train()
        self.sampler.set_epoch(epoch)
        meter, wait, busy = Meter(), 0.0, 0.0
        bar = tqdm(
            total=self.cfg.steps_per_epoch,
            disable=not self.progress_bar,
            desc=f"{self.spec.name} epoch {epoch}",
            dynamic_ncols=True,
            leave=False,
        )
        batches = iter(self.train_loader)
        t_start = time.perf_counter()
        for step in range(self.cfg.steps_per_epoch):
            t0 = time.perf_counter()
            batch = to_device(next(batches), self.env.device)
            t1 = time.perf_counter()
            self.ctx.generator = self._step_generator(epoch, step)
            losses = self.spec.losses(self.ctx, batch)
            values = _read_checked(losses, f"epoch {epoch} step {step} ({self.spec.name})")
            self.optimizer.zero_grad(set_to_none=True)
            sum(total for total, _ in losses.values()).backward()
            if self.cfg.grad_clip > 0:
                for name in self.spec.trained:
                    nn.utils.clip_grad_norm_(self.modules[name].parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            for name, average in self.averaged.items():
                average.update_parameters(self.modules[name])
            fault_point("train-step")
            t2 = time.perf_counter()
            wait, busy = wait + (t1 - t0), busy + (t2 - t1)
            meter.add(values)
            bar.update(1)
            bar.set_postfix(
                loss=f"{values[f'{self.spec.objective}/total']:.4g}",
                win_s=f"{(step + 1) * self.cfg.batch_size / (t2 - t_start):.1f}",
            )
        bar.close()
        elapsed = time.perf_counter() - t_start
        stats = {f"train/{k}": v for k, v in meter.means().items()}
        stats["windows_per_s"] = (
            self.cfg.steps_per_epoch * self.cfg.batch_size * self.env.world / elapsed
        )
        stats["data_wait_fraction"] = wait / max(wait + busy, 1e-12)
        return stats

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean terms over the fixed validation windows (shared out over ranks, all-reduced)."""
        for module in self.modules.values():
            module.eval()
        # With ema_decay the averaged networks are what is measured (and saved).
        averaged = {name: average.module for name, average in self.averaged.items()}
        ctx = replace(
            self.ctx,
            nets={**self.nets, **averaged},
            modules={**self.modules, **averaged},
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        sums: dict[str, float] = {}
        count = 0
        for cpu_batch in self.val_loader:
            batch = to_device(cpu_batch, self.env.device)
            n = batch["X"].shape[0]
            values = {k: v.item() for k, v in _flatten_losses(self.spec.losses(ctx, batch)).items()}
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value * n
            count += n
        keys = sorted(sums)
        if self.env.world > 1:  # every rank must agree on the objective (scheduler, stopping)
            total = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64)
            dist.all_reduce(total)
            sums, count = dict(zip(keys, total[:-1].tolist(), strict=True)), int(total[-1])
        return {f"val/{k}": sums[k] / max(count, 1) for k in keys}

    # -- checkpoints ---------------------------------------------------------------------------

    def _save(self, write_best: bool, val_loss: float) -> None:
        self.env.barrier()
        if self.env.main:
            extra = _checkpoint_extra(self.spec, self.instruments, self.state.epoch - 1, val_loss)
            if write_best:
                saved = {**self.modules, **self.averaged}
                save_checkpoint(self.out / "best.pt", saved[self.spec.objective], extra)
                for name, filename in self.spec.also_saved.items():
                    save_checkpoint(self.out / filename, saved[name], extra)
            fault_point("best-written")  # best.pt of this epoch saved, last.pt not yet
            state = {
                "format_version": CHECKPOINT_FORMAT_VERSION,
                "step": self.spec.name,
                "instruments": self.instruments,
                "nets": {n: self.modules[n].state_dict() for n in self.spec.trained},
                "averaged": {n: a.state_dict() for n, a in self.averaged.items()},
                "model_config": to_dict(self.model_cfg),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": {**self.state.__dict__},
                "rng": rng_state(),
            }
            _atomic_save(state, self.out / "last.pt")
        self.env.barrier()

    def _load_last(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise TrainingError(f"--resume: no {path} to resume from (start without --resume)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated file, or a pickle of something other than data
            raise TrainingError(
                f"{path}: cannot resume, not a readable training state ({_first_line(err)}); "
                "delete it to start over"
            ) from err
        found = state.get("format_version") if isinstance(state, dict) else None
        if found != CHECKPOINT_FORMAT_VERSION:
            raise TrainingError(
                f"{path}: training state format_version {found!r} found, expected "
                f"{CHECKPOINT_FORMAT_VERSION} (written by another scorecritic version; delete it "
                "to start over)"
            )
        if state.get("step") != self.spec.name:
            raise TrainingError(
                f"{path} belongs to step {state.get('step')!r}, not {self.spec.name!r}"
            )
        for name, weights in state["nets"].items():
            self.modules[name].load_state_dict(weights)
        for name, weights in state.get("averaged", {}).items():
            if name in self.averaged:  # else (ema_decay changed to 0) the average is dropped
                self.averaged[name].load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.state = Progress(**state["progress"])
        # A finished run continues when resumed with a larger --max-epochs (or patience).
        self.state.finished = self._stop_reason()
        set_rng_state(state["rng"])

    def _stop_reason(self) -> str:
        if self.state.bad_epochs >= self.cfg.early_stop_patience:
            return "early_stop"
        return "max_epochs" if self.state.epoch >= self.cfg.max_epochs else ""

    def _write_config(self) -> None:
        config = {
            "step": self.spec.name,
            "train": to_dict(self.cfg),
            "model": to_dict(self.model_cfg),
            "loss": to_dict(self.loss_cfg),
            "instruments": self.instruments,
            "world_size": self.env.world,
            "train_tracks": len(self.train_set),
            "val_tracks": len(self.val_set),
            "parameters": {n: m.n_parameters() for n, m in self.modules.items()},
        }
        _write_text_atomic(self.out / "config.json", json.dumps(config, indent=2))

    # -- epochs --------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Epochs until ``early_stop_patience`` epochs without improvement or ``max_epochs``."""
        objective = f"val/{self.spec.objective}/total"
        try:
            while not self.state.finished:
                epoch = self.state.epoch
                stats = self.train_epoch(epoch)
                stats.update(self.validate())
                val_loss = stats[objective]
                self.scheduler.step(val_loss)
                stats["lr"] = self.optimizer.param_groups[0]["lr"]
                improved = val_loss < self.state.best
                if improved:
                    self.state.best, self.state.best_epoch, self.state.bad_epochs = (
                        val_loss,
                        epoch,
                        0,
                    )
                else:
                    self.state.bad_epochs += 1
                self.state.epoch = epoch + 1
                self.state.history.append({"epoch": epoch, **stats})
                self.state.finished = self._stop_reason()
                self._save(improved or self.cfg.keep_checkpoint == "last", val_loss)
                self._log(epoch, stats)
        finally:
            # now, not when a garbage collection gets to this trainer: a later trainer in the
            # process (baseline's second phase, benchmarks) would fork its workers with these
            # alive (benchmarks/README.md, section 6)
            stop_workers(self.train_loader)
            if self.live is not None:
                self.live.end()
        return self._write_metrics()

    def _log(self, epoch: int, stats: dict[str, float]) -> None:
        if not self.env.main:
            return
        if self.live is not None:
            for key, value in stats.items():
                self.live.log_metric(key, value)
            self.live.next_step()
        objective = f"{self.spec.objective}/total"
        print(
            f"[{self.spec.name}] epoch {epoch}: train {stats[f'train/{objective}']:.4g} "
            f"val {stats[f'val/{objective}']:.4g} lr {stats['lr']:.2g} "
            f"{stats['windows_per_s']:.1f} windows/s, data wait "
            f"{100 * stats['data_wait_fraction']:.0f}%",
            flush=True,
        )

    def _write_metrics(self) -> dict[str, Any]:
        last = self.state.history[-1] if self.state.history else {}
        metrics = {
            "step": self.spec.name,
            "best_val_loss": self.state.best,
            "best_epoch": self.state.best_epoch,
            "checkpoint_epoch": (
                self.state.best_epoch
                if self.cfg.keep_checkpoint == "best"
                else self.state.epoch - 1
            ),
            "epochs": self.state.epoch,
            "stopped": self.state.finished,
            "final": last,
            "history": self.state.history,
        }
        if self.env.main:
            _write_text_atomic(self.out / "metrics.json", json.dumps(metrics, indent=2))
        return metrics


class _Dispatch(nn.Module):
    """Lets a DDP wrapper call a model method other than ``forward`` (``logits``, ...)."""

    def __init__(self, model: ScoreCriticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, method: str = "forward") -> Tensor:
        return getattr(self.model, method)(x)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def run(
    step: str,
    shards: str | Path,
    train_cfg: TrainConfig,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    out: str | Path,
    *,
    transcriptor: str | Path | None = None,
    separator: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    dvclive: bool = True,
) -> dict[str, Any]:
    """Train one system of the paper into the run folder ``out``.

    Args:
        step: "step1" (transcriptor, L_TL eq. 4), "step2" (separator, L_sep eq. 8, step-1
            transcriptor frozen), "step3" (both, eq. 8 and eq. 11), "baseline" (classifier critic,
            then separator) or "supervised" (L1 to the true stem magnitudes).
        shards: root of the shards (``manifest.json``, ``train/``, ``validation/``).
        transcriptor, separator: checkpoints of earlier steps; default ``<out>/../step1/best.pt``
            and ``<out>/../step2/best.pt``.
        resume: continue from ``<out>/last.pt``.
        progress: show a tqdm bar (rank 0).
        dvclive: log metrics with dvclive under ``<out>/dvclive`` (rank 0); ``metrics.json`` is
            written either way (off where dvclive is not installed, e.g. a bare GPU image).

    Returns:
        The metrics written to ``<out>/metrics.json`` (best validation loss, epochs, last terms).
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
    out, shards = Path(out), Path(shards)
    runs = out.resolve().parent
    transcriptor = Path(transcriptor) if transcriptor else runs / "step1" / "best.pt"
    separator = Path(separator) if separator else runs / "step2" / "best.pt"
    env = setup_distributed(train_cfg.device)
    instruments = list(ShardSet(shards, "train", verify_checksums=False).instruments)
    common = dict(resume=resume, progress=progress, dvclive=dvclive, env=env)
    try:
        if step == "step1" or step == "supervised":
            return Trainer(SPECS[step], shards, train_cfg, model_cfg, loss_cfg, out, **common).fit()
        if step == "step2":
            init = {
                "transcriptor": load_pretrained(transcriptor, "transcriptor", instruments, "step1")
            }
            return Trainer(
                SPECS[step], shards, train_cfg, model_cfg, loss_cfg, out, init=init, **common
            ).fit()
        if step == "step3":
            init = {
                "transcriptor": load_pretrained(transcriptor, "transcriptor", instruments, "step1"),
                "separator": load_pretrained(separator, "separator", instruments, "step2"),
            }
            return Trainer(
                SPECS[step], shards, train_cfg, model_cfg, loss_cfg, out, init=init, **common
            ).fit()
        # baseline: phase 1 trains the classifier critic, phase 2 the separator against it
        phase1 = out / "classifier"
        done = (phase1 / "metrics.json").is_file() and json.loads(
            (phase1 / "metrics.json").read_text()
        ).get("stopped")
        if not done:
            resume1 = resume and (phase1 / "last.pt").is_file()
            Trainer(
                SPECS["classifier"],
                shards,
                train_cfg,
                model_cfg,
                loss_cfg,
                phase1,
                resume=resume1,
                progress=progress,
                dvclive=dvclive,
                env=env,
            ).fit()
        env.barrier()
        init = {
            "classifier": load_pretrained(phase1 / "best.pt", "classifier", instruments, "baseline")
        }
        resume2 = resume and (out / "last.pt").is_file()
        return Trainer(
            SPECS["baseline"],
            shards,
            train_cfg,
            model_cfg,
            loss_cfg,
            out,
            init=init,
            resume=resume2,
            progress=progress,
            dvclive=dvclive,
            env=env,
        ).fit()
    finally:
        if env.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
