"""Adaptive layer masking (the CVPR 2022 paper's Eq. 2 option): the update rule by hand, including the d > 1 case,
and two steps of `optimise` against Adam and the masked term worked out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.clip_wrapper import CLIPWrapper
from lightning_modules.eq2_step import eq2_loss
from lightning_modules.layer_masking import AdaptiveLayerMask
from lightning_modules.manipulation import optimise
from tests.conftest import build_tiny_generator

pytestmark = pytest.mark.usefixtures("single_thread")
SIG1 = 1 / (1 + math.exp(-1))  # sigmoid of the initial logit 1


def test_rule_by_hand_lowers_moving_rows_and_raises_rows_beyond_one():
    mask = AdaptiveLayerMask(1, 4)
    torch.testing.assert_close(mask.weights(), torch.full((1, 4), SIG1))
    # Squared row distances chosen so that d = sigmoid(1) * dist2 is 0, 0.5, 1 and 2.
    d = mask.update_(torch.tensor([[0.0, 0.5, 1.0, 2.0]]) / SIG1)
    torch.testing.assert_close(d, torch.tensor([[0.0, 0.5, 1.0, 2.0]]))
    # m - 0.1 d (1 - d): unmoved and d = 1 rows keep m; d = 0.5 falls by 0.025; d = 2 *rises* by 0.2.
    torch.testing.assert_close(mask.logits, torch.tensor([[1.0, 0.975, 1.0, 1.2]]))


def test_per_row_lambda_of_equal_rows_is_the_plain_term():
    """The masked term is eq2_loss with a (B, L) lambda = lambda_sim * sigmoid(m): equal rows give the plain term."""
    g = torch.Generator().manual_seed(0)
    emb, target = (F.normalize(torch.randn(2, 8, generator=g), dim=-1) for _ in range(2))
    w, w_s = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    lam = torch.tensor([0.1, 0.2])
    plain = eq2_loss(emb, target, w, w_s, lam)
    for a, b in zip(plain, eq2_loss(emb, target, w, w_s, lam[:, None].expand(2, 6))):
        torch.testing.assert_close(a, b)
    half = eq2_loss(emb, target, w, w_s, 0.5 * lam[:, None].expand(2, 6))[0]
    torch.testing.assert_close(half, (1 - plain[1]) + 0.5 * lam * plain[2])


def test_two_steps_of_optimise_match_a_hand_computation(tiny_clip_path):
    """Start away from the source (refine mode) so that d != 0 from step 0; rows with d below and above 1.

    Step 0's learning rate is 0 (StyleCLIP's schedule), so w stays at w_init for both forward passes and the CLIP
    term's gradient g_img is the same at both; the masked term's gradient is 2 lambda sigmoid(m_l) (w_l - w_s,l).
    """
    G, clip_model = build_tiny_generator(), CLIPWrapper(tiny_clip_path)
    L, D = G.n_latent, G.style_dim
    g = torch.Generator().manual_seed(0)
    w_s = torch.randn(1, L, D, generator=g)
    direction = F.normalize(torch.randn(1, L, D, generator=g), dim=-1)
    row_dist = torch.linspace(0.0, 3.0, L)  # squared row distances 0 .. 3: d = sigmoid(m) * dist crosses 1
    w_init = w_s + direction * row_dist.sqrt()[None, :, None]
    target = F.normalize(torch.randn(1, clip_model.embed_dim, generator=g), dim=-1)
    lam, lr = 0.05, 0.1

    out = optimise(G, clip_model, w_s, target, lam, steps=2, lr=lr, w_init=w_init, adaptive_layer_masking=True)

    # By hand: the masks.
    m0 = torch.ones(L)
    d0 = torch.sigmoid(m0) * row_dist
    m1 = m0 - 0.1 * d0 * (1 - d0)
    d1 = torch.sigmoid(m1) * row_dist
    m2 = m1 - 0.1 * d1 * (1 - d1)
    assert (m1[row_dist * SIG1 > 1] > 1).all() and (m1[(row_dist > 0) & (row_dist * SIG1 < 1)] < 1).all()
    torch.testing.assert_close(out.layer_weights[0], torch.sigmoid(m2), rtol=1e-5, atol=1e-6)
    # By hand: the losses of both steps (same image, weights sigmoid(m0) then sigmoid(m1)).
    w = w_init.clone().requires_grad_(True)
    cos = (clip_model.encode_image(G.synthesis(w)) * target).sum()
    (g_img,) = torch.autograd.grad(1 - cos, w)
    cos = cos.item()
    expected_losses = [(1 - cos) + lam * (torch.sigmoid(m) * row_dist).sum().item() for m in (m0, m1)]
    torch.testing.assert_close(out.losses[:, 0], torch.tensor(expected_losses), rtol=1e-5, atol=1e-6)
    # By hand: Adam (beta 0.9, 0.999, eps 1e-8) over the two gradients; only step 1 has a learning rate (= lr).
    grads = [g_img + 2 * lam * torch.sigmoid(m)[None, :, None] * (w_init - w_s) for m in (m0, m1)]
    first = 0.9 * 0.1 * grads[0] + 0.1 * grads[1]
    second = 0.999 * 0.001 * grads[0] ** 2 + 0.001 * grads[1] ** 2
    step = lr * (first / (1 - 0.9**2)) / ((second / (1 - 0.999**2)).sqrt() + 1e-8)
    torch.testing.assert_close(out.w, w_init - step, rtol=1e-5, atol=1e-6)
    # The plain term differs (weights 1): the option changes the edit.
    plain = optimise(G, clip_model, w_s, target, lam, steps=2, lr=lr, w_init=w_init)
    assert plain.layer_weights is None and not torch.allclose(plain.w, out.w)


def test_module_field_and_edit_flag_switch_it_on(tiny_generator_path, tiny_clip_path):
    from experiments.edit import build_parser
    from lightning_modules.manipulation import ManipulationModule

    args = build_parser().parse_args(["--sound", "a.wav", "--seed", "1", "--generator", "g", "--audio-encoder", "a",
                                      "--out", "o", "--adaptive-layer-masking"])
    assert args.adaptive_layer_masking and not build_parser().parse_args(
        ["--sound", "a.wav", "--seed", "1", "--generator", "g", "--audio-encoder", "a", "--out", "o"]
    ).adaptive_layer_masking
    module = ManipulationModule(generator=tiny_generator_path, clip=tiny_clip_path, steps=3, progress=False,
                                adaptive_layer_masking=True)
    assert ManipulationModule(generator=tiny_generator_path).hparams.adaptive_layer_masking is False  # official default
    module.configure_model()
    w_s = module.generator.mean_latent(64)[:, None].expand(2, module.generator.n_latent, -1)
    out = module.optimise(w_s, F.normalize(torch.randn(2, 64), dim=-1), 0.008)
    assert out.layer_weights.shape == (2, module.generator.n_latent)
