"""Speed of the fused StyleGAN2 ops (C++ / CUDA kernels) against idiomatic PyTorch, on StyleGAN2-sized tensors.

Both sides run in the same process and allocator environment, interleaved repeat by repeat; the table gives
medians of the wall time and (on CPU) of the process CPU time, which stays stable when the machine is shared.
bias_act's bandwidth counts forward: read x, write y (2N elements); backward: read dy and y, write dx (3N); the
C++ backward sums db from dx in the same pass (no extra bytes), the CUDA one reads dx once more for db (+N).
clone() reads and writes N elements (2N).

    make bench-ops                      # CPU (and CUDA when present), torch's default threads
    python benchmarks/bench_ops.py --threads 1 --repeats 21
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import interleaved_medians, machine_header

from stylegan2_ops import bias_act, downsample2d, setup_filter, upsample2d

BIAS_ACT_SHAPES = [(8, 512, 32, 32), (4, 128, 256, 256)]
# None: rosinality's / config-f's fused_leaky_relu. 256: the conv_clamp of StyleGAN2-ADA's synthesis layers.
BIAS_ACT_CLAMPS = [None, 256.0]
UPFIRDN_SHAPE = (4, 128, 128, 128)


def measure(fns: dict[str, Callable[[], object]], device: str, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, CPU s) per call of each function, taking turns after two warm-up calls (builds, allocator
    pools, caches). On CUDA one sample is a burst of 10 calls between two synchronisations."""
    return interleaved_medians(fns, repeats, device, warmup=2, burst=10 if device == "cuda" else 1)


def bias_act_rows(device: str, impl: str, repeats: int) -> list[dict]:
    rows = []
    for clamp, shape in itertools.product(BIAS_ACT_CLAMPS, BIAS_ACT_SHAPES):
        x = torch.randn(shape, device=device, requires_grad=True)
        b = torch.randn(shape[1], device=device, requires_grad=True)
        dy = torch.randn(shape, device=device)

        def ref(x=x, b=b, dy=dy, clamp=clamp):
            y = F.leaky_relu(x + b.view(1, -1, 1, 1), 0.2) * math.sqrt(2)
            if clamp is not None:
                y = y.clamp(-clamp, clamp)
            return torch.autograd.grad(y, (x, b), dy)

        def kernel(x=x, b=b, dy=dy, clamp=clamp):
            return torch.autograd.grad(bias_act(x, b, act="lrelu", clamp=clamp, impl=impl), (x, b), dy)

        xd = x.detach()
        t = measure({"ref": ref, impl: kernel, "clone": xd.clone}, device, repeats)
        n_bytes = x.numel() * x.element_size()
        moved = (5 if impl == "cpp" else 6) * n_bytes
        rows.append(
            dict(
                op="bias_act lrelu fwd+bwd" + ("" if clamp is None else f" clamp={clamp:g}"),
                shape=shape,
                ref=t["ref"],
                kernel=t[impl],
                bandwidth={k: moved / t[impl][k] / 1e9 for k in (0, 1)},
                clone={k: 2 * n_bytes / t["clone"][k] / 1e9 for k in (0, 1)},
            )
        )
    return rows


def upfirdn2d_rows(device: str, impl: str, repeats: int) -> list[dict]:
    x = torch.randn(UPFIRDN_SHAPE, device=device)
    f = setup_filter([1, 3, 3, 1], device=device)
    rows = []
    for name, op in (("upfirdn2d up=2 [1,3,3,1]", upsample2d), ("upfirdn2d down=2 [1,3,3,1]", downsample2d)):
        t = measure(
            {"ref": lambda op=op: op(x, f, impl="ref"), impl: lambda op=op: op(x, f, impl=impl)}, device, repeats
        )
        rows.append(dict(op=name, shape=UPFIRDN_SHAPE, ref=t["ref"], kernel=t[impl]))
    return rows


def table(rows: list[dict], impl: str, cpu_time: bool) -> str:
    kinds = [(0, "wall")] + ([(1, "CPU")] if cpu_time else [])
    head = ["op", "shape"]
    for _, k in kinds:
        head += [f"ref ms ({k})", f"{impl} ms ({k})", f"speed-up ({k})"]
    for _, k in kinds:
        head += [f"{impl} GB/s ({k})", f"clone GB/s ({k})", f"% of clone ({k})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["op"], "×".join(map(str, r["shape"]))]
        for i, _ in kinds:
            cells += [f"{r['ref'][i] * 1e3:.2f}", f"{r['kernel'][i] * 1e3:.2f}", f"{r['ref'][i] / r['kernel'][i]:.2f}×"]
        for i, _ in kinds:
            if "bandwidth" in r:
                bw, cl = r["bandwidth"][i], r["clone"][i]
                cells += [f"{bw:.1f}", f"{cl:.1f}", f"{100 * bw / cl:.0f} %"]
            else:
                cells += ["–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=["cpu", "cuda", "all"], default="all", help="all = cpu, and cuda if present"
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA device")
        devices.remove("cuda")
    print(f"repeats {args.repeats}")
    for device in devices:
        impl = "cpp" if device == "cpu" else "cuda"
        header = machine_header(device)  # load average before the measurements
        rows = bias_act_rows(device, impl, args.repeats) + upfirdn2d_rows(device, impl, args.repeats)
        load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\n### {device}: {header}; load average at the end {load_after:.1f}\n")
        print(table(rows, impl, cpu_time=device == "cpu"))


if __name__ == "__main__":
    main()
