"""One Eq. 2 step, eager and CUDA-graphed; precision modes; the --gpu-full benchmark's code path at toy size."""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_clip, build_tiny_generator

from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.eq2_step import Eq2Step, GraphedEq2Step, eq2_loss
from lightning_modules.manipulation import ManipulationModule, optimise


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.pt"
    torch.save(build_tiny_clip().state_dict(), path)
    G = build_tiny_generator().requires_grad_(False)  # 16 px: bf16 convolutions are slow on CPUs
    return G, CLIPWrapper(str(path))


def batch(G, clip_model, n=3, device="cpu"):
    g = torch.Generator().manual_seed(5)
    w_s = G.mapping(torch.randn(n, G.style_dim, generator=g))[:, None].expand(-1, G.n_latent, -1).contiguous()
    target = F.normalize(torch.randn(n, clip_model.embed_dim, generator=g), dim=-1)
    return w_s.to(device), target.to(device)


def test_per_row_lambda_is_the_weighted_sum_of_row_distances():
    g = torch.Generator().manual_seed(0)
    w, w_s = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    emb = F.normalize(torch.randn(2, 8, generator=g), dim=-1)
    target = F.normalize(torch.randn(2, 8, generator=g), dim=-1)
    lam_rows = torch.rand(2, 5, generator=g)
    loss, cos, dist2 = eq2_loss(emb, target, w, w_s, lam_rows)
    by_hand = torch.stack([1 - emb[b] @ target[b] + sum(lam_rows[b, r] * ((w[b, r] - w_s[b, r]) ** 2).sum()
                                                        for r in range(5)) for b in range(2)])
    torch.testing.assert_close(loss, by_hand)
    torch.testing.assert_close(dist2, ((w - w_s) ** 2).sum((1, 2)))  # the reported distance stays unweighted
    same = eq2_loss(emb, target, w, w_s, torch.full((2, 5), 0.3))[0]
    torch.testing.assert_close(same, eq2_loss(emb, target, w, w_s, torch.full((2,), 0.3))[0])


def test_bf16_forward_stays_close_to_fp32(models):
    G, clip_model = models
    w_s, target = batch(G, clip_model)
    fp32 = optimise(G, clip_model, w_s, target, 0.008, steps=5, lr=0.1)
    bf16 = optimise(G, clip_model, w_s, target, 0.008, steps=5, lr=0.1, precision="bf16")
    assert bf16.losses.dtype == torch.float32 and torch.isfinite(bf16.losses).all()
    assert (bf16.cos_after - fp32.cos_after).abs().max() < 0.05
    assert (bf16.w - fp32.w).abs().max() > 0  # it really ran in another precision
    assert (bf16.cos_after > bf16.cos_before).all()  # and still edits towards the target


def test_unknown_precision_and_cpu_graph_are_refused(models, tiny_generator_path, tiny_clip_path):
    G, clip_model = models
    w_s, target = batch(G, clip_model)
    with pytest.raises(ValueError, match="precision must be one of"):
        optimise(G, clip_model, w_s, target, 0.008, steps=2, precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        ManipulationModule(generator=tiny_generator_path, clip=tiny_clip_path, precision="half")
    with pytest.raises(ValueError, match="CUDA graph needs the codes on a CUDA device"):
        GraphedEq2Step(G, clip_model, w_s, w_s, target, torch.full((3,), 0.008))


def test_eager_step_matches_a_hand_written_adam_step(models):
    G, clip_model = models
    w_s, target = batch(G, clip_model, n=2)
    lam = torch.full((2,), 0.008)
    step = Eq2Step(G, clip_model, w_s + 0.1, w_s, target, lam)
    w0 = step.w.detach().clone()
    w = w0.clone().requires_grad_(True)
    loss = eq2_loss(clip_model.encode_image(G.synthesis(w)), target, w, w_s, lam)[0]
    grad, = torch.autograd.grad(loss.sum(), w)
    step(0.05)
    # Adam's first step with bias correction: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps).
    torch.testing.assert_close(step.w.detach(), w0 - 0.05 * grad / (grad.abs() + 1e-8), atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphed_step_equals_eager_on_cuda(models, precision):
    G_cpu, clip_cpu = models
    w_s, target = batch(G_cpu, clip_cpu)  # made on the CPU, then moved: the module's models stay on the CPU
    G = copy.deepcopy(G_cpu).to("cuda")
    clip_model = CLIPWrapper(clip_cpu.name_or_path, device="cuda")
    w_s, target = w_s.to("cuda"), target.to("cuda")
    eager = optimise(G, clip_model, w_s, target, 0.008, steps=12, lr=0.1, precision=precision)
    graphed = optimise(G, clip_model, w_s, target, 0.008, steps=12, lr=0.1, precision=precision, cuda_graph=True)
    tol = dict(atol=1e-4, rtol=1e-4) if precision == "fp32" else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(graphed.losses, eager.losses, **tol)
    torch.testing.assert_close(graphed.w, eager.w, **tol)
    torch.testing.assert_close(graphed.cos_before, eager.cos_before, **tol)
    assert not torch.equal(graphed.w, w_s.cpu())


def load_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_manipulation.py"
    if str(path.parent) not in sys.path:  # benchmarks import their shared helper as `_common`, as scripts do
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_manipulation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_full_code_path_runs_at_toy_size_on_cpu(tmp_path):
    """`--gpu-full`'s functions at toy size on the CPU (graph modes need CUDA: the gpu test above covers them)."""
    bench = load_bench()
    module = bench.build_module(tmp_path, dict(size=32, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16,
                                                                                          32: 16}),
                                bench.TINY_CLIP, steps=4, device="cpu")
    r = bench.paper_scale(module, n_pairs=2, steps=4, modes=["fp32", "bf16"], device="cpu")
    assert list(r) == ["fp32", "bf16"]
    assert r["fp32"]["max_dcos"] == 0 and r["fp32"]["check"]
    for x in r.values():
        assert x["wall"] > 0 and x["pair_steps_per_s"] == pytest.approx(8 / x["wall"])
        assert len(x["cos_after"]) == 2 and all(math.isfinite(c) for c in x["cos_after"])
    bench.report_paper_scale("toy", r, 2, 4)
    mapper = bench.SoundMapper(module.generator.n_latent, 32, module.clip_model.embed_dim)
    encoder = bench.AudioEncoder(embed_dim=module.clip_model.embed_dim, backbone="resnet18", clip_seconds=0.5)
    assert bench.mapper_rate(module, mapper, 2, 1, "cpu") > 0
    assert bench.animate_rate(module, mapper, encoder, 2, 1, "cpu", precision="bf16") > 0
