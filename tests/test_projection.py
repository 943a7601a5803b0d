"""Projector (image -> W+): round trip on a tiny generator, loss-weight semantics, batching, noise maps,
image input handling, the command line, the output format the edit side reads, and the projection cache."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from datamodules.image_io import ImageLoadError, load_image
from lightning_modules.lpips_distance import LPIPSUnavailableError, lpips_backbone_file
from lightning_modules.networks.stylegan2 import Generator
from lightning_modules.projection import ProjectionConfig, Projector, noise_regularization, normalize_noise_

FAST = dict(w_avg_samples=1000, lpips_download=False)


def tiny_generator(seed: int = 0, noise_strength: float = 0.0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(16, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16})
    for i, conv in enumerate([G.conv1, *G.convs]):
        conv.noise.weight.data.fill_(noise_strength * (1 + 0.1 * i))  # zero at init; non-zero makes noise matter
    return G.eval()


@torch.no_grad()
def known_targets(G: Generator, n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of known W+ codes: every layer its own mapped z (a genuine W+ point, not a broadcast w)."""
    z = torch.randn(n * G.n_latent, G.style_dim, generator=torch.Generator().manual_seed(seed))
    w_plus = G.mapping(z).reshape(n, G.n_latent, G.style_dim)
    return w_plus, G.synthesis(w_plus)


@torch.no_grad()
def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().mean(dim=(1, 2, 3))


# Tiny networks: one intra-op thread (the shared fixture in conftest.py says why).
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """A torch hub cache without any ImageNet weights (LPIPS unavailable, as offline)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


@pytest.fixture
def squeeze_lpips_home(empty_torch_home):
    """A hub cache holding a (randomly initialised) torchvision SqueezeNet 1.1 file where LPIPS looks for it."""
    _, path = lpips_backbone_file("squeeze")
    os.makedirs(os.path.dirname(path))
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    return path


# ---------------------------------------------------------------------------------------------------------
# Optimisation


def test_round_trip_recovers_a_generated_image(empty_torch_home):
    """Pixel term only (perceptual weights 0): the image of a known W+ is reproduced far better than at the start."""
    G = tiny_generator()
    _, targets = known_targets(G, 2)
    cfg = ProjectionConfig(steps=200, lpips_weight=0.0, clip_weight=0.0, pixel_weight=1.0, **FAST)
    projector = Projector(G, cfg)
    start = G.synthesis(projector.w_avg.reshape(1, 1, -1).expand(2, G.n_latent, -1))
    result = projector.project(targets, progress=False)

    err_start, err_end = mse(start, targets), mse(result.images, targets)
    assert torch.all(err_end < 0.02), err_end
    assert torch.all(err_end < err_start / 25), (err_start, err_end)
    assert result.w_plus.shape == (2, G.n_latent, G.style_dim)
    # The saved code alone reproduces the reconstruction with the generator's fixed noise (what edits use).
    torch.testing.assert_close(G.synthesis(result.w_plus), result.images)
    assert set(result.history) == {"pixel", "total"}  # zero-weight terms are not computed
    assert result.noise is None
    assert all(m["psnr"] > 20 and m["lpips"] is None for m in result.metrics)
    assert any("LPIPS unavailable" in note for note in projector.notes)


def test_pixel_weight_zero_lpips_alone_drives(squeeze_lpips_home):
    G = tiny_generator()
    _, targets = known_targets(G, 2)
    cfg = ProjectionConfig(steps=60, lpips_net="squeeze", lpips_resolution=64, pixel_weight=0.0, **FAST)
    result = Projector(G, cfg).project(targets, progress=False)
    assert set(result.history) == {"lpips", "total"}
    first, last = result.history["lpips"][0], result.history["lpips"][-1]
    assert torch.all(last < first / 3), (first, last)
    assert all(m["lpips"] is not None and m["lpips_net"] == "squeeze" for m in result.metrics)


def test_pixel_weight_zero_clip_alone_drives(tiny_clip_path, empty_torch_home):
    G = tiny_generator()
    _, targets = known_targets(G, 2)
    cfg = ProjectionConfig(steps=60, lpips_weight=0.0, clip_weight=1.0, pixel_weight=0.0, clip_model=tiny_clip_path,
                           **FAST)
    result = Projector(G, cfg).project(targets, progress=False)
    assert set(result.history) == {"clip", "total"}
    first, last = result.history["clip"][0], result.history["clip"][-1]
    assert torch.all(last < first / 2), (first, last)
    assert all(m["clip_cosine"] > 1 - float(first.min()) for m in result.metrics)


def test_lpips_unavailable_follows_the_fallback(tiny_clip_path, empty_torch_home):
    G = tiny_generator()
    base = dict(lpips_weight=0.5, clip_weight=0.25, pixel_weight=1.0, clip_model=tiny_clip_path, **FAST)

    with pytest.raises(LPIPSUnavailableError, match="squeezenet1_1-b8a52dc0.pth"):
        Projector(G, ProjectionConfig(lpips_net="squeeze", lpips_fallback="error", **base))
    with pytest.warns(UserWarning, match="LPIPS term dropped"):
        dropped = Projector(G, ProjectionConfig(lpips_fallback="drop", **base))
    assert dropped.loss.weights == {"clip": 0.25, "pixel": 1.0}
    with pytest.warns(UserWarning, match="LPIPS term dropped"):
        moved = Projector(G, ProjectionConfig(lpips_fallback="clip", **base))
    assert moved.loss.weights == {"clip": 0.75, "pixel": 1.0}
    with pytest.raises(ValueError, match="nothing would drive"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Projector(G, ProjectionConfig(lpips_weight=1.0, clip_weight=0.0, pixel_weight=0.0, **FAST))


def test_batched_equals_per_image():
    """Each image has its own W+, noise maps, exploration noise (seeded) and loss: the batch changes nothing."""
    G = tiny_generator(noise_strength=0.3)
    _, targets = known_targets(G, 3)
    cfg = ProjectionConfig(steps=40, lpips_weight=0.0, optimize_noise=True, **FAST)
    projector = Projector(G, cfg)
    seeds = [5, 6, 7]
    batched = projector.project(targets, seeds=seeds, progress=False)
    for i, seed in enumerate(seeds):
        alone = projector.project(targets[i : i + 1], seeds=[seed], progress=False)
        torch.testing.assert_close(batched.w_plus[i : i + 1], alone.w_plus, atol=1e-5, rtol=1e-5)
        for nb, na in zip(batched.noise, alone.noise):
            torch.testing.assert_close(nb[i : i + 1], na, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.history["total"][:, i : i + 1], alone.history["total"], atol=1e-5,
                                   rtol=1e-4)
    # Different seeds give different exploration noise, hence different codes.
    other = projector.project(targets[:1], seeds=[99], progress=False)
    assert not torch.allclose(other.w_plus, batched.w_plus[:1], atol=1e-4)


def test_noise_optimisation_keeps_maps_gaussian():
    G = tiny_generator(noise_strength=0.3)
    _, targets = known_targets(G, 2)
    cfg = ProjectionConfig(steps=30, lpips_weight=0.0, optimize_noise=True, **FAST)
    result = Projector(G, cfg).project(targets, progress=False)
    for noise in result.noise:
        assert not torch.equal(noise[:1], noise[1:])  # each image its own maps
        torch.testing.assert_close(noise.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
        torch.testing.assert_close(noise.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-5, rtol=0)
    assert "noise_reg" in result.history
    assert all("psnr_fixed_noise" in m for m in result.metrics)


def test_noise_regularization_penalises_spatial_correlation():
    gen = torch.Generator().manual_seed(0)
    white = torch.randn(2, 1, 64, 64, generator=gen)
    smooth = torch.nn.functional.interpolate(torch.randn(2, 1, 16, 16, generator=gen), scale_factor=4)
    normalize_noise_([smooth])
    reg_white, reg_smooth = noise_regularization([white]), noise_regularization([smooth])
    assert reg_white.shape == (2,)
    # White noise: only sampling error (~0.05 here, summed over 4 scales); smooth noise: neighbours correlate.
    assert torch.all(reg_white < 0.2) and torch.all(reg_smooth > 5.0), (reg_white, reg_smooth)
    # Per image: the penalty of a batch is the penalty of each image alone.
    torch.testing.assert_close(noise_regularization([smooth[1:]]), reg_smooth[1:])


def test_config_validation():
    with pytest.raises(ValueError, match="lpips_net"):
        ProjectionConfig(lpips_net="resnet")
    with pytest.raises(ValueError, match="pixel_weight"):
        ProjectionConfig(pixel_weight=-1)
    with pytest.raises(ValueError, match="steps"):
        ProjectionConfig(steps=0)


def test_wrong_target_shape_is_refused():
    projector = Projector(tiny_generator(), ProjectionConfig(steps=1, lpips_weight=0.0, **FAST))
    with pytest.raises(ValueError, match=r"\(N, 3, 16, 16\)"):
        projector.project(torch.zeros(1, 3, 32, 32), progress=False)


# ---------------------------------------------------------------------------------------------------------
# Image input


def _write(tmp_path, name: str, array: np.ndarray, mode: str | None = None) -> str:
    path = tmp_path / name
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    img.save(path)
    return str(path)


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "painting.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageLoadError, match="painting.jpg: not an image file"):
        load_image(bad, 16)
    with pytest.raises(ImageLoadError, match="nowhere.png: no such file"):
        load_image(tmp_path / "nowhere.png", 16)


def test_grayscale_becomes_rgb(tmp_path):
    gray = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (40, 1))
    img = load_image(_write(tmp_path, "gray.png", gray), 40)
    assert img.shape == (3, 40, 40)
    torch.testing.assert_close(img[0], img[1])
    torch.testing.assert_close(img[0], img[2])
    torch.testing.assert_close(img[0], torch.from_numpy(gray).float() / 127.5 - 1)

    deep = (np.tile(np.linspace(0, 65535, 40), (40, 1))).astype(np.uint16)  # 16-bit scans
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    img16 = load_image(path, 40)
    assert img16.min() == -1 and img16.max() == 1


def test_rgba_is_composited_onto_white(tmp_path):
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[:, 20:, 3] = 255  # ... opaque on the right half only
    img = load_image(_write(tmp_path, "alpha.png", rgba), 40)
    torch.testing.assert_close(img[:, :, :20], torch.ones(3, 40, 20))  # transparent -> white
    torch.testing.assert_close(img[:, :, 20:], torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1).expand(3, 40, 20))


def test_any_aspect_is_centre_cropped_then_resized(tmp_path):
    wide = np.zeros((40, 80, 3), dtype=np.uint8)
    wide[:, :20] = (255, 0, 0)  # red bands left and right fall outside the centred square
    wide[:, 60:] = (255, 0, 0)
    wide[:, 20:60] = (0, 0, 255)
    img = load_image(_write(tmp_path, "wide.png", wide), 16)
    assert img.shape == (3, 16, 16)
    torch.testing.assert_close(img, torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).expand(3, 16, 16))


def test_tiny_image_is_refused_and_small_one_warns(tmp_path):
    tiny = _write(tmp_path, "tiny.png", np.zeros((8, 12, 3), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match=r"tiny.png: image is 12x8 px, smaller than the minimum of 32 px"):
        load_image(tiny, 16)
    small = _write(tmp_path, "small.png", np.zeros((40, 40, 3), dtype=np.uint8))
    with pytest.warns(UserWarning, match="small.png: shorter side 40 px is below the generator resolution 64"):
        assert load_image(small, 64).shape == (3, 64, 64)


# ---------------------------------------------------------------------------------------------------------
# Command line, output format, cache


@pytest.fixture
def painting_files(tmp_path):
    """Two 'paintings' of different sizes and modes, as users have them."""
    rng = np.random.default_rng(0)
    a = tmp_path / "in" / "landscape.jpg"
    b = tmp_path / "in" / "portrait.png"
    a.parent.mkdir()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(a)
    Image.fromarray(rng.integers(0, 255, (80, 40, 4), dtype=np.uint8)).save(b)  # RGBA
    return [str(a), str(b)]


@pytest.fixture
def generator_file(tmp_path):
    from lightning_modules.networks.checkpoints import save_generator

    path = tmp_path / "tiny_g.pt"
    save_generator(tiny_generator(), path)
    return str(path)


def test_command_writes_codes_the_edit_side_reads(painting_files, generator_file, tmp_path, empty_torch_home):
    from datamodules.latent_sources import parse_sources, source_wplus
    from experiments.project import DEFAULT_CONFIG, main
    from lightning_modules.networks.checkpoints import load_generator

    out = tmp_path / "out"
    config = tmp_path / "offline.yaml"  # the defaults, but never download LPIPS weights (some CI machines are online)
    config.write_text((DEFAULT_CONFIG.read_text()).replace("lpips_download: true", "lpips_download: false"))
    argv = [*painting_files, "--generator", generator_file, "--out", str(out), "--steps", "20", "--batch-size", "1",
            "--save-every", "10", "--device", "cpu", "--config", str(config)]
    with pytest.warns(UserWarning, match="LPIPS term dropped"):
        dirs = main(argv)
    assert [d.name for d in dirs] == ["landscape", "portrait"]
    for d in dirs:
        for name in ("w_plus.pt", "target.png", "reconstruction.png", "metrics.json", "progress/step_00020.png"):
            assert (d / name).is_file(), d / name
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["psnr"] > 0 and metrics["lpips"] is None
        assert metrics["weights"] == {"pixel": 1.0} and any("downloading is off" in n for n in metrics["notes"])
    assert Image.open(out / "comparison.png").size[0] == 2 * 64
    # The manipulation side reads the file as a W+ source named after the image, and the code reproduces the
    # saved reconstruction with the generator's fixed noise.
    G = load_generator(generator_file)
    sources = parse_sources([str(dirs[0] / "w_plus.pt")])
    assert [s.name for s in sources] == ["landscape"]
    w = source_wplus(sources, G)
    assert w.shape == (1, G.n_latent, G.style_dim)
    recon = torch.from_numpy(np.array(Image.open(dirs[0] / "reconstruction.png"))).permute(2, 0, 1).float()
    regenerated = (G.synthesis(w)[0].clamp(-1, 1) + 1) * 127.5
    assert (regenerated - recon).abs().max() <= 1.0
    # Nothing is overwritten without being asked.
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(argv)
    with pytest.warns(UserWarning, match="LPIPS term dropped"):
        main([*argv, "--overwrite"])


def test_command_names_every_bad_image_before_any_work(painting_files, generator_file, tmp_path):
    from experiments.project import main

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    tiny = _write(tmp_path, "thumb.png", np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match=r"2 of 4 images(.|\n)*broken.jpg(.|\n)*thumb.png"):
        main([*painting_files, str(bad), tiny, "--generator", generator_file, "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_yaml_documents_every_default():
    from experiments.project import DEFAULT_CONFIG, load_config

    assert load_config(DEFAULT_CONFIG) == ProjectionConfig()
    assert load_config(DEFAULT_CONFIG, steps=7, lr=None).steps == 7


def test_cache_projects_each_image_once(painting_files, generator_file, tmp_path, empty_torch_home, monkeypatch):
    from experiments import project

    calls = []
    real = Projector.project

    def counting(self, targets, *args, **kwargs):
        calls.append(targets.shape[0])
        return real(self, targets, *args, **kwargs)

    monkeypatch.setattr(Projector, "project", counting)
    cfg = ProjectionConfig(steps=5, lpips_weight=0.0, **FAST)
    cache = tmp_path / "cache"
    specs = ["seed:3", painting_files[0], "mean", painting_files[1]]

    resolved = project.project_image_sources(specs, generator_file, cache_dir=cache, config=cfg, device="cpu")
    assert calls == [2]  # both images in one batch
    assert resolved[0] == "seed:3" and resolved[2] == "mean"
    assert all(r.endswith("w_plus.pt") and os.path.isfile(r) for r in (resolved[1], resolved[3]))
    again = project.project_image_sources(specs, generator_file, cache_dir=cache, config=cfg, device="cpu")
    assert again == resolved and calls == [2]  # cached: no new projection

    # Other settings or other image bytes are other entries.
    other = ProjectionConfig(steps=6, lpips_weight=0.0, **FAST)
    project.project_cached(painting_files[0], generator_file, cache, other, device="cpu")
    assert calls == [2, 1]
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(painting_files[0])
    changed = project.project_cached(painting_files[0], generator_file, cache, cfg, device="cpu")
    assert calls == [2, 1, 1] and str(changed) != resolved[1]
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]
    assert project.missing_image_sources(["seed:1", str(tmp_path / "gone.png")]) == [
        ("source image", str(tmp_path / "gone.png"))]


def test_cache_key_tracks_what_changes_the_result(painting_files, generator_file, empty_torch_home):
    from dataclasses import replace

    from experiments.project import cache_key

    cfg = ProjectionConfig(lpips_net="squeeze", lpips_download=False)
    offline = cache_key(painting_files[0], generator_file, cfg)
    assert cache_key(painting_files[0], generator_file, replace(cfg, save_every=10)) == offline
    assert cache_key(painting_files[1], generator_file, cfg) != offline
    assert cache_key(painting_files[0], generator_file, replace(cfg, lr=0.05)) != offline
    # A projection made while LPIPS was unavailable (term dropped) is not reused once LPIPS can run.
    _, path = lpips_backbone_file("squeeze")
    os.makedirs(os.path.dirname(path))
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    assert cache_key(painting_files[0], generator_file, cfg) != offline


# ---------------------------------------------------------------------------------------------------------
# Editing your own painting: `experiments.edit --image` and image sources in figure configs


@pytest.fixture
def edit_assets(tmp_path, tiny_clip_path, generator_file, painting_files, monkeypatch):
    """Tiny audio encoder (64-d like the tiny CLIP), two short clips, a fast offline projection config, and a
    private projection cache."""
    import soundfile as sf

    from datamodules.soundzoo import synthesize
    from experiments.project import DEFAULT_CONFIG
    from lightning_modules.audio_export import export_audio_encoder
    from lightning_modules.networks.audio_encoder import AudioEncoder

    torch.manual_seed(0)
    encoder = export_audio_encoder(
        AudioEncoder(embed_dim=64, backbone="resnet18", width=8, clip_seconds=1.0, n_fft=256, n_mels=32),
        tmp_path / "audio_encoder.pt")
    sounds = {}
    for k, label in enumerate(["rain", "fire crackling"]):
        sounds[label] = str(tmp_path / f"{label.replace(' ', '_')}.wav")
        sf.write(sounds[label], synthesize(label, k, seconds=1.2), 16000)
    config = tmp_path / "fast_projection.yaml"
    config.write_text(DEFAULT_CONFIG.read_text().replace("steps: 1000", "steps: 5")
                      .replace("lpips_download: true", "lpips_download: false"))
    monkeypatch.setenv("AIARTIST_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = Projector.project
    monkeypatch.setattr(Projector, "project",
                        lambda self, t, *args, **kw: calls.append(t.shape[0]) or real(self, t, *args, **kw))
    return {"generator": generator_file, "audio_encoder": str(encoder), "clip": tiny_clip_path, "sounds": sounds,
            "projection_config": str(config), "painting": painting_files[0], "calls": calls,
            "cache": tmp_path / "cache" / "projections"}


def test_edit_command_takes_an_image(edit_assets, tmp_path, capsys):
    from experiments import edit

    a = edit_assets
    argv = ["--sound", a["sounds"]["rain"], "--image", a["painting"], "--generator", a["generator"],
            "--audio-encoder", a["audio_encoder"], "--clip", a["clip"], "--out", str(tmp_path / "edits"),
            "--steps", "2", "--device", "cpu", "--projection-config", a["projection_config"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LPIPS dropped offline
        assert edit.main(argv) == 0
        assert edit.main(argv) == 0
    assert a["calls"] == [1]  # the second edit of the same painting reuses the cached projection
    entries = list(a["cache"].glob("landscape-*/w_plus.pt"))
    assert len(entries) == 1
    out = capsys.readouterr().out
    assert out.count("CLIP cosine") == 2 and "landscape" in out

    argv[argv.index("--image") + 1] = str(tmp_path / "nowhere.jpg")
    assert edit.main(argv) == 1
    assert f"--image {tmp_path / 'nowhere.jpg'}: no such file" in capsys.readouterr().err


def test_figure_config_lists_paintings_as_image_files(edit_assets, tmp_path, capsys):
    import yaml

    from experiments import figures
    from lightning_modules.edit_outputs import caption_height

    a = edit_assets
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments/figures/paper_fig3.yaml").read_text())
    cfg["trainer"] = {"accelerator": "cpu", "devices": 1, "logger": False, "inference_mode": False,
                      "enable_progress_bar": False, "enable_model_summary": False}
    cfg["model"].update({"generator": a["generator"], "audio_encoder": a["audio_encoder"], "clip": a["clip"],
                         "steps": 2, "grid_cell": 32, "output_dir": str(tmp_path / "runs"), "progress": False})
    cfg["data"].update({"sounds": a["sounds"], "sources": [a["painting"], "seed:3"], "batch_size": 2})
    path = tmp_path / "fig.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["--config", str(path), "--projection-config", a["projection_config"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert figures.main([*argv, "--out", str(tmp_path / "fig.png")]) == 0
        assert figures.main([*argv, "--out", str(tmp_path / "fig_again.png")]) == 0
    assert a["calls"] == [1]  # projected once, then cached
    assert Image.open(tmp_path / "fig.png").size == (3 * 32, caption_height(32) + 2 * 32)  # source + 2 sounds

    cfg["data"]["sources"] = [str(tmp_path / "lost_painting.png")]
    path.write_text(yaml.safe_dump(cfg))
    assert figures.main(argv) == 1
    assert str(tmp_path / "lost_painting.png") in capsys.readouterr().err
