"""The training loop of every system: epochs of optimiser steps, validation, checkpoints.

What a step minimises is its :class:`train.steps.StepSpec`; what it is built from (networks,
optimiser, loaders, device) comes from :mod:`train.assemble`; which steps run in which order,
from :mod:`train.pipeline`. This file is the loop alone.

Training follows paper §3.2: Adam (lr 0.001), ReduceLROnPlateau(0.5, patience 2) on the
validation loss, early stop after 10 epochs without improvement, gradient clipping per network.
Windows depend on (seed, epoch, step, rank) only, so a resumed run (``last.pt``: weights,
weight averages, optimiser, scheduler, progress, RNG states) ends bit-equal to an uninterrupted
one on CPU. ``last.pt`` is written at every epoch's end, and after any step when SIGTERM or
SIGUSR1 arrives (:mod:`train.preemption`): it then also holds the steps taken in the epoch and
their summed loss terms, and the run leaves with exit code 75. Under ``torchrun`` every rank
trains a DDP replica on its own windows; rank 0 alone logs (dvclive, tqdm) and writes
checkpoints.

Run folder: ``config.json`` (what the run is: recipe, every setting, the shards' content hash
and features), ``best.pt`` (the objective network; step 3 also ``transcriptor.pt``), ``last.pt``
(training state), ``metrics.json`` and ``dvclive/``. Nothing in a checkpoint depends on the run
folder's name, so the same recipe and seed give the same bytes under any name.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from prep.atomic import atomic_write, atomic_write_text
from prep.faults import fault_point
from prep.shards import ShardSet
from train.assemble import (
    Dist,
    TrainingError,
    build_loaders,
    build_networks,
    build_optimizer,
    check_stem_access,
    configure_cpu_threads,
    rng_state,
    seed_everything,
    set_rng_state,
    setup_distributed,
)
from train.config import RESUME_MAY_CHANGE, RunConfig, to_dict
from train.data import stop_workers, to_device
from train.model import (
    CHECKPOINT_FORMAT_VERSION,
    ScoreCriticModel,
    load_error_reason,
    save_checkpoint,
)
from train.preemption import Preempted, StopRequest, agreed_signal, stop_signals
from train.steps import NetLosses, StepContext, StepSpec

__all__ = [
    "Trainer",
    "TrainingError",
    "Progress",
    "PendingTerms",
    "backward_each",
    "check_resumable",
]


@dataclass
class Progress:
    """Run state saved in ``last.pt`` besides weights and optimiser."""

    epoch: int = 0  # next epoch to run (the one in progress when step > 0)
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    finished: str = ""  # "early_stop" / "max_epochs" once done
    history: list[dict[str, float]] = field(default_factory=list)
    # A run stopped within an epoch (preempted): the optimiser steps of `epoch` already taken,
    # their loss terms summed (one Meter.add per step) and their seconds ("wait", "busy",
    # "elapsed"). 0 and empty at an epoch's end.
    step: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_seconds: dict[str, float] = field(default_factory=dict)


class Meter:
    """Running means of named scalar terms (``sums``, ``count``: where an earlier part of the
    epoch left them)."""

    def __init__(self, sums: dict[str, float] | None = None, count: int = 0) -> None:
        self.sums: dict[str, float] = dict(sums or {})
        self.count = count

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


CHECK_EVERY = 16
"""Steps between two host reads of the loss terms (their non-finite check and the meter): the
step itself never waits for the device; a read also happens at the end of an epoch and before
a preemption save, so no checkpoint is written before the steps it holds are checked."""


class PendingTerms:
    """Each step's loss terms kept on the device as one stacked vector, read to the host in one
    transfer every :data:`CHECK_EVERY` steps (:meth:`read`).

    A non-finite term stops the run naming the first step and every term that was non-finite
    there, exactly as a per-step check would; the steps that ran after it on the device are
    discarded with the run (no checkpoint is written before a read)."""

    def __init__(self) -> None:
        self.keys: list[str] | None = None
        self.rows: list[Tensor] = []
        self.wheres: list[str] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, losses: NetLosses, where: str) -> None:
        """Queue one step's terms (no host synchronisation)."""
        flat = _flatten_losses(losses)
        if self.keys is None:
            self.keys = list(flat)
        elif list(flat) != self.keys:
            raise ValueError(f"loss terms changed at {where}: {list(flat)} != {self.keys}")
        self.rows.append(torch.stack([v.detach().float() for v in flat.values()]))
        self.wheres.append(where)

    def read(self) -> list[dict[str, float]]:
        """Every queued step's {term: value} in order (one host transfer), then empty."""
        if not self.rows:
            return []
        table = torch.stack(self.rows).tolist()
        keys, wheres = self.keys or [], self.wheres
        self.rows, self.wheres = [], []
        return [_checked(dict(zip(keys, row, strict=True)), where)
                for row, where in zip(table, wheres, strict=True)]


def _checked(values: dict[str, float], where: str) -> dict[str, float]:
    """``values`` unchanged; a non-finite one stops the run naming the step and the term."""
    bad = [key for key, value in values.items() if not math.isfinite(value)]
    if bad:
        raise TrainingError(
            f"non-finite loss at {where}: {', '.join(f'{k} = {values[k]}' for k in bad)}; "
            "stopped, the last checkpoint is the last good one"
        )
    return values


def backward_each(losses: NetLosses, modules: dict[str, nn.Module]) -> None:
    """Gradients of each trained network's total into that network's parameters only.

    Step 3's separator and transcriptor losses share the transcriptor's pass over S_hat
    (:func:`train.steps._step3`): L_sep must reach the separator through it but not the
    transcriptor's weights, L_ATL the weights but not the separator. One backward per network
    restricted to its own parameters (``inputs``) does both; a single network needs no routing.
    """
    if len(losses) == 1:
        next(iter(losses.values()))[0].backward()
        return
    for k, (name, (total, _)) in enumerate(losses.items()):
        params = [p for p in modules[name].parameters() if p.requires_grad]
        total.backward(inputs=params, retain_graph=k + 1 < len(losses))


def check_resumable(
    path: Path, state: dict[str, Any], config: RunConfig, instruments: list[str], preset: str
) -> None:
    """Refuse to continue the training state ``state`` (read from ``path``) with settings or
    shards other than its own, in one line naming the checkpoint and what differs.

    A state written before it recorded its whole ``config`` is compared on its
    ``model_config`` alone.

    Raises:
        TrainingError: other instruments, another preset, or settings outside
            :data:`RESUME_MAY_CHANGE` that differ.
    """
    saved_instruments = [str(name) for name in state.get("instruments") or []]
    if saved_instruments and saved_instruments != list(instruments):
        raise TrainingError(
            f"{path}: cannot resume, the run trained on instruments {saved_instruments} and "
            f"these shards hold {list(instruments)}; resume on the run's shards, or train a "
            "new run into another --out"
        )
    saved = state.get("config") or {"model": state.get("model_config") or {}}
    current = config.to_dict()
    changed = [
        f"{section}.{key} {value!r} -> {current[section][key]!r}"
        for section, values in saved.items() if section in current
        for key, value in values.items()
        if key in current[section] and current[section][key] != value
        and f"{section}.{key}" not in RESUME_MAY_CHANGE
    ]
    if not changed:
        return
    saved_preset = str(state.get("preset") or "")
    cause = (f"the run was started with preset {saved_preset!r}, this command asks {preset!r}; "
             if saved_preset and preset and saved_preset != preset else "")
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    raise TrainingError(
        f"{path}: cannot resume with other settings ({cause}{shown}); a resumed run keeps the "
        f"settings it started with (it may change only "
        f"{', '.join(RESUME_MAY_CHANGE)}): drop the changes, or train a new run into "
        "another --out"
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class Trainer:
    """Trains one :class:`StepSpec`; ``fit()`` runs epochs until early stop or max_epochs.

    Args:
        spec: the step (:data:`train.steps.SPECS`).
        shards_root: shard root (``manifest.json``, ``train/``, ``validation/``).
        config: every setting of the run.
        out: the run folder.
        init: pretrained networks by name (a step's frozen critic, step 3's start).
        record: what the run is, written to ``config.json``; its ``recipe`` and ``paper_row``
            also go into every checkpoint (evaluation labels rows from them).
        resume: continue from ``out/last.pt``.
        progress: tqdm bar (rank 0).
        dvclive: log metrics under ``out/dvclive`` (rank 0).
        env: process group and device (default: set up from ``config.train.device``).
    """

    def __init__(
        self,
        spec: StepSpec,
        shards_root: Path,
        config: RunConfig,
        out: Path,
        *,
        init: dict[str, ScoreCriticModel] | None = None,
        record: dict[str, Any] | None = None,
        resume: bool = False,
        progress: bool = True,
        dvclive: bool = True,
        env: Dist | None = None,
    ) -> None:
        self.spec, self.out, self.record = spec, Path(out), dict(record or {})
        recipe = self.record.get("recipe", {})
        # what every checkpoint says it is (evaluation reads it), never the folder's name
        self.identity = {"recipe": str(recipe.get("name", "")),
                         "paper_row": str(recipe.get("paper_row", ""))}
        if not resume and (self.out / "last.pt").is_file():
            # checked before any set-up: a fresh run would overwrite it at its first epoch
            raise TrainingError(
                f"{self.out / 'last.pt'}: this folder holds a training state; pass --resume to "
                f"continue it, or give another --out (or remove the folder) to start over"
            )
        self.env = env or setup_distributed(config.train.device)
        self.cfg = config.train
        self.threads = configure_cpu_threads(self.env.device, self.cfg.num_workers)
        self.progress_bar = progress and self.env.main
        self.check_every = CHECK_EVERY  # steps between host reads of the loss terms
        self.shards_root = Path(shards_root)
        try:  # checksums are verified at open: a bad shard stops the run here, named
            self.train_set = ShardSet(shards_root, "train")
            self.val_set = ShardSet(shards_root, "validation")
        except Exception as err:
            raise TrainingError(f"cannot use the shards under {shards_root}: {err}") from err
        check_stem_access(spec, self.train_set, self.val_set)
        self.instruments = list(self.train_set.instruments)
        self.config = replace(
            config, model=replace(config.model, n_instruments=len(self.instruments))
        )
        # checked before any network is built or file written: a refused resume changes nothing
        saved = self._read_last() if resume else None
        seed_everything(self.cfg.seed)  # before the fresh networks are initialised
        networks = build_networks(spec, self.config, init or {}, self.env)
        self.modules, self.nets, self.averaged = networks.modules, networks.nets, networks.averaged
        self.optimizer, self.scheduler = build_optimizer(
            spec, self.config, self.modules, self.env.world
        )
        self.state = Progress()
        self.stop = StopRequest()  # fit() replaces it by the one its signal handlers set
        weights = torch.as_tensor(self.train_set.class_weights, dtype=torch.float32)
        use_bf16 = self.cfg.bf16 and self.env.device.type == "cuda"
        self.ctx = StepContext(
            self.nets,
            self.modules,
            self.config,
            weights.to(self.env.device),
            autocast=lambda: torch.autocast(self.env.device.type, torch.bfloat16, enabled=use_bf16),
        )
        loaders = build_loaders(spec, self.config, self.train_set, self.val_set, self.env)
        self.sampler, self.train_loader, self.val_loader = (
            loaders.sampler, loaders.train, loaders.validation
        )
        self.out.mkdir(parents=True, exist_ok=True)
        if saved is not None:
            self._restore(saved)
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

    # -- one step, one epoch -----------------------------------------------------------------

    def _step_generator(self, epoch: int, step: int) -> torch.Generator:
        seed = np.random.SeedSequence([self.cfg.seed, epoch, step, self.env.rank, 1])
        return torch.Generator().manual_seed(int(seed.generate_state(1)[0]))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of ``steps_per_epoch`` optimiser steps; mean terms, throughput, data wait.

        A run resumed within ``epoch`` starts at the step it stopped after (the sampler draws
        from there, the meter and timers continue from the saved sums). A stop signal ends the
        epoch after any step: the state is saved and :class:`Preempted` raised (:meth:`_preempt`).
        """
        for name in self.spec.trained:
            self.modules[name].train()
        resumed = epoch == self.state.epoch and self.state.step > 0
        first = self.state.step if resumed else 0
        seconds = dict(self.state.epoch_seconds) if resumed else {}
        self.sampler.set_epoch(epoch, first)
        meter = Meter(self.state.epoch_sums, first) if resumed else Meter()
        wait, busy = seconds.get("wait", 0.0), seconds.get("busy", 0.0)
        bar = tqdm(
            total=self.cfg.steps_per_epoch,
            initial=first,
            disable=not self.progress_bar,
            desc=f"{self.spec.name} epoch {epoch}",
            dynamic_ncols=True,
            leave=False,
        )
        batches = iter(self.train_loader)
        pending = PendingTerms()
        t_start = time.perf_counter() - seconds.get("elapsed", 0.0)
        for step in range(first, self.cfg.steps_per_epoch):
            t0 = time.perf_counter()
            batch = to_device(next(batches), self.env.device)
            t1 = time.perf_counter()
            self.ctx.generator = self._step_generator(epoch, step)
            losses = self.spec.losses(self.ctx, batch)
            pending.add(losses, f"epoch {epoch} step {step} ({self.spec.name})")
            self.optimizer.zero_grad(set_to_none=True)
            backward_each(losses, self.modules)
            if self.cfg.grad_clip > 0:
                for name in self.spec.trained:
                    nn.utils.clip_grad_norm_(self.modules[name].parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            for name, average in self.averaged.items():
                average.update_parameters(self.modules[name])
            fault_point("train-step")
            t2 = time.perf_counter()
            wait, busy = wait + (t1 - t0), busy + (t2 - t1)
            bar.update(1)
            last = step + 1 == self.cfg.steps_per_epoch
            if last or len(pending) >= self.check_every:
                self._read_terms(pending, meter, bar, (step + 1) / (t2 - t_start))
            signum = agreed_signal(self.stop, self.env.world, self.env.device)
            if signum:
                self._read_terms(pending, meter, bar, (step + 1) / (t2 - t_start))
                bar.close()
                timing = {"wait": wait, "busy": busy, "elapsed": t2 - t_start}
                self._preempt(signum, epoch, step + 1, meter, timing)
        bar.close()
        elapsed = time.perf_counter() - t_start
        stats = {f"train/{k}": v for k, v in meter.means().items()}
        stats["windows_per_s"] = (
            self.cfg.steps_per_epoch * self.cfg.batch_size * self.env.world / elapsed
        )
        stats["data_wait_fraction"] = wait / max(wait + busy, 1e-12)
        return stats

    def _read_terms(
        self, pending: PendingTerms, meter: Meter, bar: tqdm, steps_per_s: float
    ) -> None:
        """Read the queued steps' terms to the host (the non-finite check) into ``meter``."""
        values = pending.read()
        for step_values in values:
            meter.add(step_values)
        if values:
            bar.set_postfix(
                loss=f"{values[-1][f'{self.spec.objective}/total']:.4g}",
                win_s=f"{steps_per_s * self.cfg.batch_size:.1f}",
            )

    def _preempt(
        self, signum: int, epoch: int, steps: int, meter: Meter, seconds: dict[str, float]
    ) -> NoReturn:
        """Save the state after ``steps`` steps of ``epoch`` to ``last.pt``, say where the run
        stopped, and raise :class:`Preempted` (every rank, at the same step)."""
        self.state.step, self.state.epoch_seconds = steps, seconds
        self.state.epoch_sums = dict(meter.sums)
        self.env.barrier()
        if self.env.main:
            self._write_last()
        self.env.barrier()
        stopped = Preempted(
            signal.Signals(signum).name, self.spec.name, epoch, steps,
            self.cfg.steps_per_epoch, self.out / "last.pt",
        )
        if self.env.main:
            print(f"[{self.spec.name}] {stopped}", flush=True)
        raise stopped

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean terms over the fixed validation windows (shared out over ranks, all-reduced)."""
        for module in self.modules.values():
            module.eval()
        # With a weight average the averaged networks are what is measured (and saved).
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
            extra = {
                "instruments": list(self.instruments),
                "step": self.spec.name,
                **self.identity,
                "epoch": self.state.epoch - 1,
                "val_loss": val_loss,
            }
            if write_best:
                saved = {**self.modules, **self.averaged}
                save_checkpoint(self.out / "best.pt", saved[self.spec.objective], extra)
                for name, filename in self.spec.also_saved.items():
                    save_checkpoint(self.out / filename, saved[name], extra)
            fault_point("best-written")  # best.pt of this epoch saved, last.pt not yet
            self._write_last()
        self.env.barrier()

    def _write_last(self) -> None:
        """``last.pt``: everything a resumed run continues from (rank 0, atomically)."""
        state = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "step": self.spec.name,
            "instruments": self.instruments,
            "nets": {n: self.modules[n].state_dict() for n in self.spec.trained},
            "averaged": {n: a.state_dict() for n, a in self.averaged.items()},
            "model_config": to_dict(self.config.model),
            # what the run is, for a resume to compare with (check_resumable)
            "config": self.config.to_dict(),
            "preset": str(self.record.get("preset", "")),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": {**self.state.__dict__},
            "rng": rng_state(),
        }
        try:  # whole or not at all, also after a power cut or a full disk
            atomic_write(
                self.out / "last.pt", lambda f: torch.save(state, f),
                fault="checkpoint-write", action="cannot save checkpoint",
            )
        except OSError as err:
            raise TrainingError(str(err)) from err

    def _read_last(self) -> dict[str, Any]:
        """``out/last.pt``, checked: readable, this format and step, and a run that this
        command's settings and shards continue (:func:`check_resumable`)."""
        path = self.out / "last.pt"
        if not path.is_file():
            raise TrainingError(f"--resume: no {path} to resume from (start without --resume)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated file, or a pickle of something other than data
            raise TrainingError(
                f"{path}: cannot resume, not a readable training state "
                f"({load_error_reason(err)}); delete it to start over"
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
        check_resumable(
            path, state, self.config, self.instruments, str(self.record.get("preset", ""))
        )
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a state :meth:`_read_last` accepted: weights, averages, optimiser,
        scheduler, progress, RNG."""
        path = self.out / "last.pt"
        try:
            for name, weights in state["nets"].items():
                self.modules[name].load_state_dict(weights)
            for name, weights in state.get("averaged", {}).items():
                if name in self.averaged:
                    self.averaged[name].load_state_dict(weights)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise TrainingError(
                f"{path}: cannot resume, the saved networks do not fit this run's "
                f"({_first_line(err)}); train a new run into another --out"
            ) from err
        self.state = Progress(**state["progress"])
        if self.state.step > self.cfg.steps_per_epoch:
            raise TrainingError(
                f"{path} stopped after step {self.state.step} of epoch {self.state.epoch}, "
                f"beyond train.steps_per_epoch = {self.cfg.steps_per_epoch}: resume it with the "
                "steps_per_epoch it ran with"
            )
        # A finished run continues when resumed with a larger max_epochs (or patience).
        self.state.finished = self._stop_reason()
        set_rng_state(state["rng"])

    def _stop_reason(self) -> str:
        if self.state.bad_epochs >= self.cfg.early_stop_patience:
            return "early_stop"
        return "max_epochs" if self.state.epoch >= self.cfg.max_epochs else ""

    def _write_config(self) -> None:
        manifest = self.train_set.manifest
        config = {
            **self.record,
            "step": self.spec.name,
            "config": self.config.to_dict(),
            "shards": {  # what the data is (not where or when it was built), and where it was
                "root": str(self.shards_root),
                "content_sha256": manifest.content_sha256(),
                "feature_params": dict(manifest.params),
            },
            "instruments": self.instruments,
            "world_size": self.env.world,
            "lr_at_global_batch": {  # train.lr moved to this run's batch by train.lr_batch_rule
                "global_batch": self.cfg.batch_size * self.env.world,
                "lr": self.cfg.scaled_lr(self.env.world),
            },
            "train_tracks": len(self.train_set),
            "val_tracks": len(self.val_set),
            "parameters": {n: m.n_parameters() for n, m in self.modules.items()},
        }
        _write_text_atomic(self.out / "config.json", json.dumps(config, indent=2))

    # -- epochs --------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Epochs until ``early_stop_patience`` epochs without improvement or ``max_epochs``.

        SIGTERM and SIGUSR1 stop it after the current step, the state saved
        (:class:`~train.preemption.Preempted`, exit code 75).
        """
        objective = f"val/{self.spec.objective}/total"
        try:
            with stop_signals() as self.stop:
                self._epochs(objective)
        finally:
            # now, not when a garbage collection gets to this trainer: a later trainer in the
            # process (the baseline's second phase, benchmarks) would fork its workers with
            # these alive (benchmarks/README.md)
            stop_workers(self.train_loader)
            if self.live is not None:
                self.live.end()
        return self._write_metrics()

    def _epochs(self, objective: str) -> None:
        """Train, validate, step the scheduler and save, epoch after epoch, until finished."""
        while not self.state.finished:
            epoch = self.state.epoch
            stats = self.train_epoch(epoch)
            self.state.step, self.state.epoch_sums, self.state.epoch_seconds = 0, {}, {}
            stats.update(self.validate())
            val_loss = stats[objective]
            self.scheduler.step(val_loss)
            stats["lr"] = self.optimizer.param_groups[0]["lr"]
            improved = val_loss < self.state.best
            if improved:
                self.state.best, self.state.best_epoch = val_loss, epoch
                self.state.bad_epochs = 0
            else:
                self.state.bad_epochs += 1
            self.state.epoch = epoch + 1
            self.state.history.append({"epoch": epoch, **stats})
            self.state.finished = self._stop_reason()
            self._save(improved or self.cfg.keep_checkpoint == "last", val_loss)
            self._log(epoch, stats)

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
            "recipe": self.identity["recipe"],
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


def _write_text_atomic(path: Path, text: str) -> None:
    """metrics.json, config.json whole or not at all: a kill never leaves a truncated JSON that
    a rerun would then fail to parse."""
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise TrainingError(str(err)) from err
