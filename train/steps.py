"""What each training system minimises: step 1, 2, 3 (paper §2), the classifier baseline's two
phases and the supervised separator, as one :class:`StepSpec` each.

A spec says which networks are trained, which one is a frozen critic, which shard fields a batch
needs, which network's loss is the validation objective (the one ``best.pt`` holds), and a
``losses(ctx, batch)`` function returning, for every trained network, its total and its terms.
The paper's losses come from :mod:`train.losses`; our extensions plug in at their hooks
(:mod:`train.extensions`), each only when its config section turns it on.

Gradient routing (step 3): the separator is trained with L_sep (eq. 8) through the transcriptor
used as a critic, whose parameters L_sep must not move; the transcriptor is trained with
L_TL-3 (eq. 11), which must not move the separator. The critic term and L_ATL (eq. 10) read the
same logits on S_hat, so one transcriptor pass over [X, S_hat_i, X~] serves both, and the
trainer backpropagates each network's total into that network's parameters only
(:func:`train.trainer.backward_each`). Where no pass is shared (step 2, the anchor) the critic
runs with its parameters frozen (:meth:`StepContext.critic`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from prep.features import stft
from train import extensions as E
from train import losses as L
from train.config import RunConfig
from train.model import ScoreCriticModel

__all__ = ["ANCHOR", "StepContext", "StepSpec", "SPECS", "NetLosses"]

ANCHOR = "anchor"  # step 3's frozen copy of the step-1 transcriptor (the `anchor` extension)
Terms = dict[str, Tensor]
NetLosses = dict[str, tuple[Tensor, Terms]]  # trained net -> (total, {term: value})


@dataclass
class StepContext:
    """What a step's loss function sees: networks, settings and per-step randomness."""

    nets: dict[str, nn.Module]  # training forward (DDP wrapper for trained nets)
    modules: dict[str, ScoreCriticModel]  # the bare models
    config: RunConfig
    class_weights: Tensor  # [I] instrument weights (paper §3.2)
    autocast: Callable[[], contextlib.AbstractContextManager]
    generator: torch.Generator | None = None  # remix draws (seeded per step)

    @property
    def weights(self) -> Tensor | None:
        """The instrument weights where ``loss.use_weights``, else None (all 1)."""
        return self.class_weights if self.config.loss.use_weights else None

    def forward(self, name: str, method: str, x: Tensor) -> Tensor:
        """Run ``name`` (through its DDP wrapper when trained) under autocast; float32 out."""
        net = self.nets[name]
        with self.autocast():
            if method == "forward":
                out = net(x)
            elif isinstance(net, DistributedDataParallel):
                out = net(x, method=method)  # see train.pipeline.Dispatch
            else:
                out = getattr(net, method)(x)
        return out.float()

    def critic(self, name: str, method: str, x: Tensor) -> Tensor:
        """Run ``name`` as a critic: gradients reach ``x`` but not the critic's parameters."""
        module = self.modules[name]
        with frozen(module), self.autocast():
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


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of ``module`` leave the autograd graph inside the block (critic pass)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def _separate(ctx: StepContext, X: Tensor) -> Tensor:
    """S_hat = M(X) * X [B, I, F, T] (paper §2: masking the mixture magnitude)."""
    return ctx.forward("separator", "forward", X) * X[:, None]


def _owned_remix_term(
    ctx: StepContext, batch: dict[str, Tensor], S_hat: Tensor
) -> Tensor | None:
    """gamma L_own of the `owned_remix` extension (None when off); draws its donors from
    ``ctx.generator``, so it runs before any other draw of the step."""
    cfg = ctx.config
    if cfg.owned_remix.weight <= 0:
        return None
    return E.owned_remix_loss(
        cfg.owned_remix, lambda x: _separate(ctx, x), batch["X"], batch["A"], S_hat,
        ctx.generator, cfg.loss.mixture_norm,
    )


def _separator_loss(
    ctx: StepContext,
    batch: dict[str, Tensor],
    S_hat: Tensor,
    z_each: Tensor | None = None,
    l_own: Tensor | None = None,
) -> tuple:
    """L_sep (eq. 8) with the transcriptor as critic, plus the `anchor` term and the
    `owned_remix` term ``l_own`` (:func:`_owned_remix_term`) when they are on.

    ``z_each``: the transcriptor's logits on ``S_hat`` when the step already has them (step 3
    shares one pass between the critic and L_ATL); else the critic runs here, frozen."""
    cfg = ctx.config
    X, Y = batch["X"], batch["Y"]
    if z_each is None:
        z_each = ctx.critic("transcriptor", "logits_of_sources", S_hat)  # [B, I_src, I, 88, T]
    total, terms = L.separation_loss(
        z_each, Y, X, S_hat, batch.get("A"), ctx.class_weights, cfg.loss
    )
    if cfg.anchor.weight > 0:
        z_anchor = ctx.critic(ANCHOR, "logits_of_sources", S_hat)  # [B, I_src, I, 88, T]
        l_anchor = E.anchor_loss(cfg.anchor, z_anchor, Y, ctx.weights)
        total, terms = total + l_anchor, {**terms, "anchor": l_anchor.detach()}
    if l_own is not None:
        total, terms = total + l_own, {**terms, "owned": l_own.detach()}
    return total, {**terms, "total": total.detach()}


def _step1(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    z = ctx.forward("transcriptor", "logits", batch["X"])  # [B, I, 88, T]
    return {
        "transcriptor": L.transcription_loss_step1(
            z, batch["Y"], ctx.class_weights, ctx.config.loss
        )
    }


def _step2(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    S_hat = _separate(ctx, batch["X"])  # [B, I, F, T]
    l_own = _owned_remix_term(ctx, batch, S_hat)
    return {"separator": _separator_loss(ctx, batch, S_hat, l_own=l_own)}


def _step3(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    """L_sep (eq. 8) for the separator and L_TL-3 (eq. 11) for the transcriptor, with one
    transcriptor pass over every input it sees: X, each S_hat_i (L_ATL) and the remixes X~.

    The critic term of L_sep and L_ATL (eq. 10) both need the transcriptor's logits on S_hat_i
    with the same weights, so that pass serves both: S_hat stays attached (L_sep's gradient
    reaches the separator through it) and the trainer routes each network's total to its own
    parameters only (:func:`train.trainer.backward_each`): what detaching S_hat for L_ATL and
    freezing the critic for L_sep do with two passes. The remixes are built from detached
    outputs: L_AML (eq. 9) must not move the separator."""
    cfg, X, Y = ctx.config.loss, batch["X"], batch["Y"]
    S_hat = _separate(ctx, X)  # [B, I, F, T]
    l_own = _owned_remix_term(ctx, batch, S_hat)  # its donors are the step's first draw
    S_fixed = S_hat.detach()
    B, n_inst = S_fixed.shape[:2]
    inputs = [X]
    if cfg.use_atl:
        inputs.append(S_hat.flatten(0, 1))  # [B * I, F, T], attached: the critic pass too
    Y_remix = None
    if cfg.use_aml:
        donors = L.remix_indices(B, n_inst, ctx.generator, X.device)  # [B, I]: a_i per remix
        X_remix, Y_remix = L.remix(S_fixed, Y, donors)  # [B, F, T], [B, I, 88, T]
        inputs.append(X_remix)
    z = ctx.forward("transcriptor", "logits", torch.cat(inputs))  # one pass over all inputs
    z_mix, rest = z[:B], z[B:]
    z_each = z_remix = None
    if cfg.use_atl:
        z_each, rest = rest[: B * n_inst].unflatten(0, (B, n_inst)), rest[B * n_inst :]
    if cfg.use_aml:
        z_remix = rest
    sep = _separator_loss(ctx, batch, S_hat, z_each, l_own)  # the critic's own pass w/o L_ATL
    trans = L.transcription_loss_step3(
        z_mix, Y, ctx.class_weights, cfg, logits_remix=z_remix, Y_remix=Y_remix,
        logits_each=z_each, aml=E.aml_term(ctx.config.aml_positives),
    )
    return {"separator": sep, "transcriptor": trans}


def _classifier(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    z = ctx.forward("classifier", "logits", batch["X"])  # [B, I, T]
    total = L.classifier_loss(z, batch["activity"].float(), ctx.weights)
    return {"classifier": (total, {"activity": total.detach()})}


def _baseline(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    S_hat = _separate(ctx, batch["X"])  # [B, I, F, T]
    z_each = ctx.critic("classifier", "logits_of_sources", S_hat)  # [B, I_src, I, T]
    return {
        "separator": L.classifier_separation_loss(
            z_each, batch["activity"].float(), batch["X"], S_hat, ctx.class_weights,
            ctx.config.loss,
        )
    }


def _supervised(ctx: StepContext, batch: dict[str, Tensor]) -> NetLosses:
    S_hat = _separate(ctx, batch["X"])  # [B, I, F, T]
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
