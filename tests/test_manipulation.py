"""ManipulationModule's method (paper Eq. 2) on tiny models: batching, convergence, lambda_sim, lr schedule, sources
at several resolutions, CLIP preprocessing against CLIP's own transform, targets (mixing, intensity)."""

import math

import clip
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from datamodules.latent_sources import parse_sources, seed_to_z, source_wplus
from datamodules.loudness import rms_dbfs
from lightning_modules.audio_export import export_audio_encoder
from lightning_modules.clip_wrapper import clip_preprocess
from lightning_modules.manipulation import (
    ManipulationModule,
    intensity_lambda,
    not_padding,
    optimise,
    styleclip_lr,
)
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.networks.checkpoints import save_generator
from lightning_modules.networks.stylegan2 import Generator

STYLE_DIM = 32


def tiny_generator(size: int, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    channels = {2**i: (32 if 2**i <= 8 else 16) for i in range(2, int(math.log2(size)) + 1)}
    return Generator(size, style_dim=STYLE_DIM, n_mlp=2, channels=channels).eval()


@pytest.fixture(scope="module")
def gen32_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "g32.pt"
    save_generator(tiny_generator(32), path)
    return str(path)


def make_module(gen_path, clip_path, **kw) -> ManipulationModule:
    m = ManipulationModule(generator=gen_path, clip=clip_path, progress=False, **kw)
    m.configure_model()
    return m


@pytest.fixture(scope="module")
def targets(tiny_clip_path):
    from lightning_modules.clip_wrapper import CLIPWrapper

    return CLIPWrapper(tiny_clip_path).encode_text(
        ["fire crackling", "rain", "a thunderstorm", "latin music", "wind"])


def sources_for(m: ManipulationModule, specs) -> torch.Tensor:
    return source_wplus(parse_sources(specs), m.generator, m.hparams.truncation, m.mean_latent())


# ------------------------------------------------------------------------------------------------- lr schedule
def reference_lr(step: int, steps: int, lr: float) -> float:
    """docs/reference.md §lr-schedule written piecewise: linear warm-up over t < 5 %, flat, raised-cosine decay
    over t > 75 %."""
    t = step / steps
    warm = t / 0.05 if t < 0.05 else 1.0
    decay = 1.0 if t <= 0.75 else 0.5 * (1 - math.cos(math.pi * (1 - t) / 0.25))
    return lr * warm * decay


@pytest.mark.parametrize("step", [0, 3, 7, 14, 15, 100, 224, 225, 226, 260, 290, 299])
def test_lr_schedule_matches_formula(step):
    assert styleclip_lr(step, 300, 0.1) == pytest.approx(reference_lr(step, 300, 0.1), abs=1e-12)


def test_lr_schedule_landmarks():
    assert styleclip_lr(0, 300, 0.1) == 0.0  # StyleCLIP's first step does not move w
    assert styleclip_lr(15, 300, 0.1) == pytest.approx(0.1)  # end of warm-up
    assert styleclip_lr(150, 300, 0.1) == pytest.approx(0.1)
    assert styleclip_lr(int(0.875 * 400), 400, 0.1) == pytest.approx(0.05)  # half-way through the decay


def test_single_step_has_zero_lr_so_w_stays(gen32_path, tiny_clip_path, targets):
    m = make_module(gen32_path, tiny_clip_path, steps=1)
    w_s = sources_for(m, [0])
    out = m.optimise(w_s, targets[:1], 0.008)
    assert torch.equal(out.w, w_s)


# ------------------------------------------------------------------------------------------------- Eq. 2
def test_batched_edit_equals_each_pair_alone(gen32_path, tiny_clip_path, targets):
    m = make_module(gen32_path, tiny_clip_path, steps=12)
    w_s = sources_for(m, [0, 1, 2])
    lam = torch.tensor([0.008, 0.03, 0.002])
    batch = m.optimise(w_s, targets[:3], lam)
    for i in range(3):
        alone = m.optimise(w_s[i : i + 1], targets[i : i + 1], lam[i : i + 1])
        torch.testing.assert_close(batch.w[i], alone.w[0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(batch.losses[:, i], alone.losses[:, 0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(batch.cos_after[i], alone.cos_after[0], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(batch.w[0], w_s[0])  # and it did edit


def test_loss_falls_and_cosine_rises_for_every_pair(gen32_path, tiny_clip_path, targets):
    m = make_module(gen32_path, tiny_clip_path, steps=40)
    w_s = sources_for(m, [0, 1, 2, 3, "mean"])
    out = m.optimise(w_s, targets, 0.008)
    assert out.losses.shape == (40, 5)
    assert (out.loss_after < out.losses[0]).all(), (out.losses[0], out.loss_after)
    assert (out.cos_after > out.cos_before + 0.01).all(), (out.cos_before, out.cos_after)
    # the recorded first loss is Eq. 2 at w = w_s: 1 - cos (distance 0)
    torch.testing.assert_close(out.losses[0], 1 - out.cos_before)


def test_larger_lambda_sim_keeps_w_closer(gen32_path, tiny_clip_path, targets):
    m = make_module(gen32_path, tiny_clip_path, steps=30)
    w_s = sources_for(m, [5]).expand(3, -1, -1)
    lambdas = torch.tensor([0.0005, 0.005, 0.05])
    out = m.optimise(w_s, targets[:1].expand(3, -1), lambdas)
    d = out.w_dist
    assert d[0] > d[1] > d[2] > 0, d
    torch.testing.assert_close(d, (out.w - w_s).flatten(1).norm(dim=1))


def test_gif_frames_every_k_steps(gen32_path, tiny_clip_path, targets):
    m = make_module(gen32_path, tiny_clip_path, steps=6)
    out = m.optimise(sources_for(m, [0, 1]), targets[:2], 0.008, gif_every=2, frame_size=16)
    assert len(out.frames) == 4  # steps 0, 2, 4 and the final image
    assert out.frames[0].shape == (2, 3, 16, 16) and out.frames[0].dtype == torch.uint8


def test_stateless_optimise_equals_the_module(gen32_path, tiny_clip_path, targets):
    """The module method is a thin call: the function with the same models and settings gives the same edit."""
    m = make_module(gen32_path, tiny_clip_path, steps=5)
    w_s = sources_for(m, [0, 1])
    via_module = m.optimise(w_s, targets[:2], 0.008)
    direct = optimise(m.generator, m.clip_model, w_s, targets[:2], 0.008, steps=5, lr=m.hparams.lr)
    torch.testing.assert_close(direct.w, via_module.w)
    torch.testing.assert_close(direct.losses, via_module.losses)


def test_w_init_starts_elsewhere_but_pulls_towards_the_source(gen32_path, tiny_clip_path, targets):
    m = make_module(gen32_path, tiny_clip_path, steps=1)
    w_s = sources_for(m, [0, 1])
    w_init = w_s + 0.5 * torch.randn(w_s.shape, generator=torch.Generator().manual_seed(3))
    out = optimise(m.generator, m.clip_model, w_s, targets[:2], 0.008, steps=1, lr=0.1, w_init=w_init)
    torch.testing.assert_close(out.w, w_init)  # step 0 has learning rate 0: the result is the start point
    expected_dist = (w_init - w_s).flatten(1).norm(dim=1)
    torch.testing.assert_close(out.w_dist, expected_dist, rtol=1e-5, atol=1e-5)  # distance to w_s, not to w_init
    plain = optimise(m.generator, m.clip_model, w_s, targets[:2], 0.008, steps=1, lr=0.1)
    torch.testing.assert_close(out.cos_before, plain.cos_before)  # "before" scores the source itself
    torch.testing.assert_close(out.source_images, plain.source_images)
    with pytest.raises(ValueError, match="w_init has shape"):
        optimise(m.generator, m.clip_model, w_s, targets[:2], 0.008, steps=1, lr=0.1, w_init=w_s[:1])


def test_callback_sees_every_step_and_can_stop(gen32_path, tiny_clip_path, targets):
    m = make_module(gen32_path, tiny_clip_path, steps=6)
    w_s = sources_for(m, [0, 1])
    seen = []

    def watch(step, images, loss):
        seen.append((step, tuple(images.shape), tuple(loss.shape), images.requires_grad))

    out = optimise(m.generator, m.clip_model, w_s, targets[:2], 0.008, steps=6, lr=0.1, callback=watch)
    assert [s[0] for s in seen] == list(range(6))
    assert all(s[1] == (2, 3, 32, 32) and s[2] == (2,) and not s[3] for s in seen)
    torch.testing.assert_close(torch.stack([out.losses[i] for i in range(6)]), out.losses)
    stopped = optimise(m.generator, m.clip_model, w_s, targets[:2], 0.008, steps=6, lr=0.1,
                       callback=lambda step, images, loss: step == 2)
    assert stopped.losses.shape[0] == 3  # steps 0, 1, 2 ran; the cancel came after step 2
    torch.testing.assert_close(stopped.losses, out.losses[:3])


def test_inference_mode_is_refused(gen32_path, tiny_clip_path, targets):
    m = make_module(gen32_path, tiny_clip_path, steps=2)
    w_s = sources_for(m, [0])
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode=False"):
        m.optimise(w_s, targets[:1], 0.008)


# ------------------------------------------------------------------------------------------------- sources
@pytest.mark.parametrize("size,n_latent", [(32, 8), (64, 10), (128, 12)])
def test_sources_follow_the_generator_resolution(tmp_path, size, n_latent):
    G = tiny_generator(size, seed=size)
    assert G.n_latent == n_latent
    w_file, wp_file = tmp_path / "w.npy", tmp_path / "wp.pt"
    w_code, wp_code = torch.randn(STYLE_DIM), torch.randn(n_latent, STYLE_DIM)
    np.save(w_file, w_code.numpy())
    torch.save({"w_plus": wp_code[None], "names": ["painting"]}, wp_file)
    sources = parse_sources([7, "mean", str(w_file), str(wp_file)])
    mean = G.mean_latent()
    w = source_wplus(sources, G, truncation=0.7, mean_latent=mean)
    assert w.shape == (4, n_latent, STYLE_DIM)
    with torch.no_grad():
        raw = G.mapping(seed_to_z(7, STYLE_DIM))
    expect_seed = mean + 0.7 * (raw - mean)  # truncation towards the mean
    torch.testing.assert_close(w[0], expect_seed.expand(n_latent, -1))
    torch.testing.assert_close(w[1], mean.expand(n_latent, -1))
    torch.testing.assert_close(w[2], w_code.expand(n_latent, -1))
    torch.testing.assert_close(w[3], wp_code)
    assert sources[3].name == "painting"
    with torch.no_grad():
        assert G.synthesis(w).shape == (4, 3, size, size)


def test_wplus_file_from_another_resolution_is_rejected(tmp_path):
    G = tiny_generator(32)
    path = tmp_path / "from_1024px.pt"
    torch.save(torch.randn(1, 18, STYLE_DIM), path)
    with pytest.raises(ValueError, match="from_1024px.pt.*n_latent|from_1024px.pt"):
        source_wplus(parse_sources([str(path)]), G)


# ------------------------------------------------------------------------------------------------- CLIP input
def test_clip_preprocess_matches_clips_own_transform_and_passes_gradients(gen32_path, tiny_clip_path):
    # A fixed, non-square, smooth image (CLIP's transform: bicubic resize of the short side, centre crop, mean/std).
    yy, xx = np.meshgrid(np.linspace(0, 1, 48), np.linspace(0, 1, 80), indexing="ij")
    rgb = np.stack([0.5 + 0.5 * np.sin(6 * xx + 2 * yy), yy, 0.5 + 0.5 * np.cos(5 * xx * yy)], axis=-1)
    u8 = (rgb * 255).round().astype(np.uint8)
    reference = clip.clip._transform(32)(Image.fromarray(u8))[None]  # PIL pipeline, OpenAI's code
    ours = clip_preprocess(torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 127.5 - 1, 32)
    assert ours.shape == reference.shape == (1, 3, 32, 32)
    # PIL rounds the resized image to uint8 (<= 0.5/255 before /std); allow that plus kernel edge effects
    assert (ours - reference).abs().max() < 0.03, (ours - reference).abs().max()
    assert (ours - reference).abs().mean() < 0.01

    m = make_module(gen32_path, tiny_clip_path)
    w = torch.zeros(1, m.generator.n_latent, STYLE_DIM) + m.mean_latent()
    w.requires_grad_(True)
    emb = m.clip_model.encode_image(m.generator.synthesis(w))
    emb[0, 0].backward()
    per_layer = w.grad[0].abs().sum(-1)
    assert torch.isfinite(w.grad).all() and (per_layer > 0).all(), per_layer  # every W+ layer gets gradient


# ------------------------------------------------------------------------------------------------- targets
def test_guidance_mixing(gen32_path, tiny_clip_path, targets):
    a = targets[:2]
    text = make_module(gen32_path, tiny_clip_path).clip_model.encode_text(["an oil painting of fire"])
    only_text = make_module(gen32_path, tiny_clip_path, text_prompt="an oil painting of fire", audio_weight=0.0)
    torch.testing.assert_close(only_text.targets_for(a), text.expand(2, -1))
    half = make_module(gen32_path, tiny_clip_path, text_prompt="an oil painting of fire", audio_weight=0.5)
    mixed = half.targets_for(a)
    expect = (a + text) / (a + text).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(mixed, expect)
    torch.testing.assert_close(make_module(gen32_path, tiny_clip_path).targets_for(a), a)
    with pytest.raises(ValueError, match="text_prompt"):
        ManipulationModule(generator=gen32_path, audio_weight=0.5)


def test_intensity_lambda_is_monotonic_in_loudness():
    levels = np.linspace(-80, 5, 60)
    lams = [intensity_lambda(0.008, lv, floor_db=-60, gain=4.0) for lv in levels]
    assert all(a >= b for a, b in zip(lams, lams[1:]))
    assert intensity_lambda(0.008, -60) == pytest.approx(0.032) and intensity_lambda(0.008, 0) == pytest.approx(0.002)
    assert intensity_lambda(0.008, -30) == pytest.approx(0.008)


def test_sounds_embedded_once_with_loudness(tmp_path, gen32_path, tiny_clip_path, monkeypatch):
    enc = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, clip_seconds=1.0, n_fft=256, n_mels=32)
    enc_path = export_audio_encoder(enc, tmp_path / "enc.pt")
    rng = np.random.default_rng(0)
    base = (rng.standard_normal(24000) * 0.05).astype(np.float32)  # 1.5 s at 16 kHz: two 1 s windows (mean)
    paths = []
    for gain, rate in ((1.0, 16000), (4.0, 16000), (1.0, 8000)):
        p = tmp_path / f"clip_{gain}_{rate}.wav"
        sf.write(p, base * gain if rate == 16000 else base[::2] * gain, rate)
        paths.append(str(p))
    m = make_module(gen32_path, tiny_clip_path, audio_encoder=str(enc_path), intensity=True)
    calls = []
    encoder = m._load_audio_encoder()
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
    emb, levels = m.embed_sounds(paths)
    assert calls == [(6, 16000)]  # one encoder call for all clips' windows: [0, 1) s and the end-aligned [0.5, 1.5) s
    assert [w["starts_s"] for w in m.sound_info] == [[0.0, 0.5]] * 3
    assert emb.shape == (3, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert levels[1] - levels[0] == pytest.approx(20 * math.log10(4), abs=0.05)
    lam = m.lambdas_for(levels)
    assert lam[1] < lam[0]  # the louder clip edits harder
    assert rms_dbfs(torch.zeros(10)) == pytest.approx(-120.0)


def test_center_and_random_sound_crops_are_todays_crops(tmp_path, gen32_path, tiny_clip_path, monkeypatch):
    """'center' and seeded 'random' feed the encoder exactly what load_audio + crop_or_pad gave before the window
    reader (the same seeds per clip)."""
    from datamodules.audio_io import crop_or_pad, load_audio

    enc = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, clip_seconds=1.0, n_fft=256, n_mels=32)
    enc_path = export_audio_encoder(enc, tmp_path / "enc.pt")
    rng = np.random.default_rng(1)
    paths = []
    for k, (seconds, rate) in enumerate(((3.2, 16000), (2.5, 44100))):
        paths.append(str(tmp_path / f"c{k}.wav"))
        sf.write(paths[-1], (rng.standard_normal(int(seconds * rate)) * 0.1).astype(np.float32), rate)
    for crop in ("center", "random"):
        m = make_module(gen32_path, tiny_clip_path, audio_encoder=str(enc_path), sound_crop=crop, seed=4)
        encoder, fed = m._load_audio_encoder(), []
        original = encoder.forward
        monkeypatch.setattr(encoder, "forward",
                            lambda *a, _fed=fed, _orig=original, **k: _fed.append(a[0].clone()) or _orig(*a, **k))
        emb, _ = m.embed_sounds(paths)
        old = torch.stack([crop_or_pad(load_audio(p, 16000), 16000, crop,
                                       torch.Generator().manual_seed(4 * 100_003 + k)) for k, p in enumerate(paths)])
        assert len(fed) == 1 and torch.equal(fed[0], old)
        torch.testing.assert_close(emb, original(old, augment=False), rtol=0, atol=1e-6)
        assert all(w["policy"] == crop and len(w["starts_s"]) == 1 for w in m.sound_info)


# ------------------------------------------------------------------------------------------------- DDP padding
@pytest.mark.parametrize("n_items,world", [(5, 2), (7, 3), (6, 3), (1, 4)])
def test_padding_mask_drops_exactly_the_distributed_sampler_repeats(n_items, world):
    from torch.utils.data.distributed import DistributedSampler

    kept = []
    for rank in range(world):
        order = list(DistributedSampler(range(n_items), num_replicas=world, rank=rank, shuffle=False))
        seen, mask = 0, []
        for start in range(0, len(order), 2):  # batches of 2
            chunk = order[start : start + 2]
            mask += not_padding(seen, len(chunk), world, rank, n_items).tolist()
            seen += len(chunk)
        kept += [i for i, keep in zip(order, mask) if keep]
    assert sorted(kept) == list(range(n_items))
