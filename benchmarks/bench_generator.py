"""StyleGAN2 generator speed: one config-f forward pass and one W+ gradient step, ops `ref` vs kernels, and our
modulated conv (input scaling + one shared conv + output scaling) vs the grouped conv with per-sample weights.

    make bench-generator
    python benchmarks/bench_generator.py [--size 256] [--device cpu] [--repeats 5] [--threads N]

Rows, each the median of `--repeats` timed calls (cases interleaved) after one warm-up (which builds the kernels):
- forward: z -> image, batch 1 and 4, no grad (what demos and figure grids do);
- W+ step: synthesis + backward to w_plus, batch 1 (one iteration of the manipulation / projection loop).
Columns: stylegan2_ops impl `ref` (pure PyTorch) and `auto` (C++ on CPU, CUDA on GPU), with our modulated conv;
and `auto` with the grouped-conv formulation (rosinality's / NVlabs' fused_modconv path), as the baseline the
design choice is measured against. The allocator environment is printed, since it changes CPU timings
(docs/reference.md §allocator).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from _common import interleaved_medians, machine_header

from lightning_modules.networks.stylegan2 import Generator, ModulatedConv2d


def grouped_forward(self: ModulatedConv2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The per-sample-weight formulation: build W'' (N*out, in, k, k) and convolve with groups = N."""
    n, c, h, wd = x.shape
    style = self.modulation(w).view(n, 1, c, 1, 1)
    weight = self.scale * self.weight * style  # (N, out, in, k, k)
    if self.demodulate:
        weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    k = self.kernel_size
    x = x.reshape(1, n * c, h, wd)
    if self.upsample:
        weight = weight.transpose(1, 2).reshape(n * c, self.out_channels, k, k)
        x = F.conv_transpose2d(x, weight, stride=2, groups=n)
        x = self.blur(x.view(n, self.out_channels, x.shape[2], x.shape[3]))
        return x
    x = F.conv2d(x, weight.reshape(n * self.out_channels, c, k, k), padding=self.padding, groups=n)
    return x.view(n, self.out_channels, h, wd)


@contextmanager
def variant(impl: str, conv) -> Iterator[None]:
    """Run with stylegan2_ops `impl` and `conv` as ModulatedConv2d.forward."""
    original = ModulatedConv2d.forward
    os.environ["STYLEGAN2_OPS_IMPL"] = impl
    ModulatedConv2d.forward = conv
    try:
        yield
    finally:
        ModulatedConv2d.forward = original
        os.environ.pop("STYLEGAN2_OPS_IMPL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    G = Generator(args.size).to(device).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in G.parameters())
    z1, z4 = torch.randn(1, 512, device=device), torch.randn(4, 512, device=device)
    w_plus = G.mapping(z1)[:, None].repeat(1, G.n_latent, 1)

    def forward(z):
        with torch.no_grad():
            return G(z)

    def w_step():
        w = w_plus.clone().requires_grad_(True)
        G.synthesis(w).square().mean().backward()
        return w.grad

    rows = {
        "forward, batch 1": lambda: forward(z1),
        "forward, batch 4": lambda: forward(z4),
        "W+ step, batch 1": w_step,
    }
    ours = ModulatedConv2d.forward
    columns = {"ref": ("ref", ours), "auto": ("auto", ours), "auto, grouped": ("auto", grouped_forward)}
    def in_variant(fn, impl, conv):
        def call():
            with variant(impl, conv):
                return fn()
        return call

    # One warm-up call each (kernel builds, allocator, cuDNN autotuning); then the cases take turns.
    cases = {(col, row): in_variant(fn, impl, conv) for row, fn in rows.items()
             for col, (impl, conv) in columns.items()}
    med = {k: (1000 * w, 1000 * c) for k, (w, c) in interleaved_medians(cases, args.repeats, device).items()}

    # Both formulations compute the same image (a check that the baseline is a fair one).
    ref_image = forward(z4)
    with variant("auto", grouped_forward):
        grouped_image = forward(z4)
    diff = (ref_image - grouped_image).abs().max().item()

    print(f"# bench_generator: {args.size}px config-f, {n_params:,} parameters, n_latent {G.n_latent}")
    print(machine_header(device))
    print(f"median of {args.repeats} interleaved repeats after a warm-up; grouped vs ours max |diff| {diff:.1e}")
    print("cells: wall ms / process CPU ms (summed over threads; steadier than wall time on a shared machine)\n")
    print("| pass | " + " | ".join(f"ops {c}" for c in columns) + " | ref / auto (CPU) | grouped / ours (CPU) |")
    print("|" + "---|" * (len(columns) + 3))
    for row in rows:
        cells = " | ".join(f"{med[c, row][0]:.1f} / {med[c, row][1]:.1f}" for c in columns)
        ratio_ops = med["ref", row][1] / med["auto", row][1]
        ratio_grouped = med["auto, grouped", row][1] / med["auto", row][1]
        print(f"| {row} | {cells} | {ratio_ops:.2f}x | {ratio_grouped:.2f}x |")


if __name__ == "__main__":
    main()
