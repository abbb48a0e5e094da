"""Step 3's shared transcriptor pass and routed backward against the two-pass computation.

The reference, :func:`two_pass_step3`, is the step as computed before the critic and L_ATL
shared a pass: the frozen critic on S_hat for L_sep (eq. 8), a second transcriptor pass on the
detached S_hat for L_ATL (eq. 10), one ``backward`` of the sum of the totals. The product's
step (one pass, :func:`train.trainer.backward_each`) must give the same terms and the same
gradients of every parameter to float tolerance, step after step of Adam on a fixed seed.
The loss-term reads of the trainer (:class:`train.trainer.PendingTerms`) are checked here too.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import Tensor

import train.extensions as E
import train.losses as L
from train.assemble import TrainingError
from train.config import ModelConfig, RunConfig
from train.model import Separator, Transcriptor
from train.steps import ANCHOR, SPECS, StepContext, _owned_remix_term, _separate, _separator_loss
from train.trainer import PendingTerms, backward_each

MODEL = ModelConfig(bottleneck_channels=16, hidden_channels=32, blocks_per_repeat=3, repeats=1)
B, N_INST, F, T = 4, 3, 1025, 12
PAPER = {"loss": {"use_aml": True, "use_atl": True}}  # benchmarks' step3: every paper term
OURS = {**PAPER, "aml_positives": {"enabled": True}, "anchor": {"weight": 1.0},
        "owned_remix": {"weight": 40.0}}  # every extension that touches step 3's losses
RTOL, ATOL = 1e-5, 1e-6  # float32 sums over a few thousand terms in another order


def two_pass_step3(ctx: StepContext, batch: dict[str, Tensor]) -> dict:
    """Step 3 with the critic's own frozen pass and a separate pass on the detached S_hat."""
    cfg, X, Y = ctx.config.loss, batch["X"], batch["Y"]
    S_hat = _separate(ctx, X)
    sep = _separator_loss(ctx, batch, S_hat, l_own=_owned_remix_term(ctx, batch, S_hat))
    S_fixed = S_hat.detach()
    inputs, Y_remix = [X], None
    if cfg.use_atl:
        inputs.append(S_fixed.flatten(0, 1))
    if cfg.use_aml:
        donors = L.remix_indices(B, N_INST, ctx.generator, X.device)
        X_remix, Y_remix = L.remix(S_fixed, Y, donors)
        inputs.append(X_remix)
    z = ctx.forward("transcriptor", "logits", torch.cat(inputs))
    z_mix, rest = z[:B], z[B:]
    z_each = z_remix = None
    if cfg.use_atl:
        z_each, rest = rest[: B * N_INST].unflatten(0, (B, N_INST)), rest[B * N_INST:]
    if cfg.use_aml:
        z_remix = rest
    trans = L.transcription_loss_step3(
        z_mix, Y, ctx.class_weights, cfg, logits_remix=z_remix, Y_remix=Y_remix,
        logits_each=z_each, aml=E.aml_term(ctx.config.aml_positives))
    return {"separator": sep, "transcriptor": trans}


def _batch(seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"X": torch.rand(B, F, T, generator=g) * 5,
            "Y": (torch.rand(B, N_INST, 88, T, generator=g) < 0.05).float(),
            "A": torch.rand(B, N_INST, F, T, generator=g) < 0.2}


def _setup(sections: dict) -> tuple[StepContext, torch.optim.Optimizer]:
    torch.manual_seed(0)
    modules = {"separator": Separator(MODEL), "transcriptor": Transcriptor(MODEL)}
    config = RunConfig().override({**sections, "model": {"bottleneck_channels": 16}})
    if config.anchor.weight > 0:
        modules[ANCHOR] = copy.deepcopy(modules["transcriptor"]).eval().requires_grad_(False)
    opt = torch.optim.Adam([p for n in ("separator", "transcriptor")
                            for p in modules[n].parameters()], lr=1e-3)
    ctx = StepContext(dict(modules), modules, config, torch.tensor([1.0, 2.0, 0.5]),
                      autocast=contextlib.nullcontext)
    return ctx, opt


def _terms(losses: dict) -> dict[str, float]:
    return {f"{net}/{k}": v.item() for net, (_, terms) in losses.items() for k, v in terms.items()}


@pytest.mark.parametrize("sections", [PAPER, OURS, {}], ids=["paper", "ours", "no-adversarial"])
def test_shared_pass_matches_two_passes_over_adam_steps(sections):
    ours, opt_ours = _setup(sections)
    ref, opt_ref = _setup(sections)
    for step in range(3):
        batch = _batch(step)
        for ctx, opt, losses_of, backward in (
            (ref, opt_ref, two_pass_step3,
             lambda losses: sum(t for t, _ in losses.values()).backward()),
            (ours, opt_ours, SPECS["step3"].losses,
             lambda losses, ctx=ours: backward_each(losses, ctx.modules)),
        ):
            ctx.generator = torch.Generator().manual_seed(100 + step)
            opt.zero_grad(set_to_none=True)
            ctx.losses = losses_of(ctx, batch)
            backward(ctx.losses)
        got, want = _terms(ours.losses), _terms(ref.losses)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=RTOL, abs=ATOL), (step, key)
        for net in ("separator", "transcriptor"):
            for (name, p), q in zip(ours.modules[net].named_parameters(),
                                    ref.modules[net].parameters(), strict=True):
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6,
                                           msg=lambda m, s=step, n=f"{net}.{name}": f"{s} {n}: {m}")
        opt_ours.step()
        opt_ref.step()


def test_shared_pass_needs_the_routing():
    """A plain backward of the sum would train the transcriptor with L_sep as well: the
    comparison above would catch a trainer that lost the routing."""
    grads = []
    for routed in (True, False):
        ctx, _ = _setup(PAPER)
        ctx.generator = torch.Generator().manual_seed(1)
        losses = SPECS["step3"].losses(ctx, _batch(0))
        if routed:
            backward_each(losses, ctx.modules)
        else:
            sum(t for t, _ in losses.values()).backward()
        grads.append(torch.cat([p.grad.flatten()
                                for p in ctx.modules["transcriptor"].parameters()]))
    assert not torch.allclose(grads[0], grads[1], rtol=1e-3)


def test_pending_terms_name_the_first_non_finite_step_and_term():
    pending = PendingTerms()
    for step, value in enumerate([1.0, float("nan"), float("inf")]):
        terms = {"pitch": torch.tensor(value), "score": torch.tensor(2.0)}
        pending.add({"transcriptor": (torch.tensor(3.0), terms)}, f"epoch 0 step {step}")
    assert len(pending) == 3
    with pytest.raises(TrainingError, match=r"epoch 0 step 1: transcriptor/pitch = nan;"):
        pending.read()
    good = PendingTerms()
    good.add({"t": (torch.tensor(3.0), {"a": torch.tensor(1.5)})}, "epoch 0 step 0")
    assert good.read() == [{"t/a": 1.5, "t/total": 3.0}] and len(good) == 0
