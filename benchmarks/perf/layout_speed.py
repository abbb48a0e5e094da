"""The TCN in [batch, frames, channels] layout against the model's own, CPU-seconds per pass.

The model keeps Conv-TasNet's [batch, C, T] layout: every channel norm transposes to
``LayerNorm``'s last dimension and back, and the 1x1 convolution after it copies the result
to contiguous memory (finding 33: ``copy_`` was a quarter of a CPU step). This benchmark runs
the same network's parameters through a prototype forward that stays in [batch, T, C]: 1x1
convolutions as ``F.linear``, ``F.layer_norm`` without transposes, and each dilated depthwise
convolution as three shifted multiply-adds. It prints CPU-seconds per forward+backward of both,
their ratio and the largest output difference; nothing in the product uses the prototype.

Usage:
    python -m benchmarks.perf.layout_speed --preset tiny --net transcriptor --rows 40
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.common import add_json_option, description, machine, write_json
from benchmarks.perf.compile_speed import add_network_options, network_and_input, per_pass


def block_btc(block: Any, x: Any) -> tuple[Any, Any]:
    """One :class:`train.model.ConvBlock` on x [batch, T, B] -> (residual or None, skip)."""
    import torch.nn.functional as F

    conv_in, prelu1, norm1, depthwise, prelu2, norm2, _ = block.conv_layers
    h = prelu1(F.linear(x, conv_in.weight[..., 0], conv_in.bias))  # [batch, T, H]
    h = F.layer_norm(h, h.shape[-1:], norm1.norm.weight, norm1.norm.bias, norm1.norm.eps)
    d, frames = depthwise.dilation[0], h.shape[1]
    w = depthwise.weight[:, 0, :]  # [H, P=3]
    padded = F.pad(h, (0, 0, d, d))  # [batch, T + 2d, H]
    h = (padded[:, :frames] * w[:, 0] + padded[:, d:d + frames] * w[:, 1]
         + padded[:, 2 * d:2 * d + frames] * w[:, 2] + depthwise.bias)  # [batch, T, H]
    h = prelu2(h)
    h = F.layer_norm(h, h.shape[-1:], norm2.norm.weight, norm2.norm.bias, norm2.norm.eps)
    residual = (None if block.res_out is None
                else F.linear(h, block.res_out.weight[..., 0], block.res_out.bias))
    return residual, F.linear(h, block.skip_out.weight[..., 0], block.skip_out.bias)


def tcn_btc(tcn: Any, spec: Any) -> Any:
    """:class:`train.model.TCN`'s forward in [batch, T, C]: spec [batch, F, T] -> logits."""
    import torch
    import torch.nn.functional as F

    feats = tcn.input_norm(torch.log1p(spec.clamp_min(0) / tcn.config.input_log_eps))
    x = F.linear(feats.transpose(1, 2), tcn.bottleneck.weight[..., 0], tcn.bottleneck.bias)
    skip_sum = torch.zeros_like(x)  # [batch, T, B]
    for block in tcn.blocks:
        residual, skip = block_btc(block, x)
        if residual is not None:
            x = x + residual
        skip_sum = skip_sum + skip
    prelu, out = tcn.output
    return F.linear(prelu(skip_sum), out.weight[..., 0], out.bias).transpose(1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    add_network_options(parser)
    add_json_option(parser, Path("runs-bench/layout-speed.json"))
    args = parser.parse_args()

    import torch

    model, x = network_and_input(args)
    tcn = model.tcn
    with torch.no_grad():  # move every parameter off its initial value (PReLU, norms, biases)
        for p in tcn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    channels_first = per_pass(tcn, x, args.repeats)
    channels_last = per_pass(lambda s: tcn_btc(tcn, s), x, args.repeats)
    with torch.no_grad():
        diff = (tcn(x) - tcn_btc(tcn, x)).abs().max().item()
    print(f"{args.net} TCN ({args.preset}, {args.rows} x {x.shape[1]} x {args.frames}, "
          f"{args.threads} thread(s)): [B, C, T] {channels_first:.3f} CPU-s per "
          f"forward+backward, [B, T, C] {channels_last:.3f} "
          f"({channels_first / channels_last:.2f}x), max |diff| {diff:.2g}")
    write_json(args.json, {"machine": machine(), **vars(args), "json": str(args.json),
                           "channels_first_cpu_s": channels_first,
                           "channels_last_cpu_s": channels_last,
                           "speedup": channels_first / channels_last, "max_abs_diff": diff})


if __name__ == "__main__":
    main()
