"""Audio encoder (1-channel ResNet, projection, unit norm, SpecAugment in training) and its slim export."""

import urllib.error

import pytest
import torch
import torchvision

from lightning_modules.audio_export import export_audio_encoder, load_audio_encoder
from lightning_modules.networks import audio_encoder as ae
from lightning_modules.networks.audio_encoder import AudioEncoder, ResNetTrunk

SMALL = dict(embed_dim=16, backbone="resnet18", width=8, n_mels=32, n_fft=256, hop_length=80, clip_seconds=0.5)


def test_output_is_unit_norm_in_clip_dim():
    enc = AudioEncoder(**SMALL).eval()
    wave = torch.randn(3, enc.clip_samples)
    out = enc(wave)
    assert out.shape == (3, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    assert enc.clip_samples == 8000 and enc.sample_rate == 16000


@pytest.mark.parametrize("backbone,dim", [("resnet18", 8 * 8), ("resnet50", 8 * 8 * 4)])
def test_backbone_feature_width(backbone, dim):
    assert ResNetTrunk(*ae.BACKBONES[backbone][:2], width=8).out_dim == dim


def test_imagenet_stem_adaptation_equals_rgb_network_on_grey_input(monkeypatch):
    """Summing conv1's RGB filters is exact: the 1-channel trunk on x == torchvision's resnet on (x, x, x)."""
    reference = torchvision.models.resnet18().eval()
    monkeypatch.setattr(ae.BACKBONES["resnet18"][2], "get_state_dict", lambda progress=True: reference.state_dict())
    enc = AudioEncoder(**{**SMALL, "width": 64, "pretrained": True}).eval()
    x = torch.randn(2, 1, 40, 60)
    reference.fc = torch.nn.Identity()
    torch.testing.assert_close(enc.backbone(x), reference(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    assert enc.config["pretrained"] is False  # the export must not try to download again


def test_pretrained_offline_gives_clear_message(monkeypatch):
    def offline(progress=True):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(ae.BACKBONES["resnet18"][2], "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="pretrained: false"):
        AudioEncoder(**{**SMALL, "width": 64, "pretrained": True})
    with pytest.raises(ValueError, match="width 64"):
        AudioEncoder(**{**SMALL, "pretrained": True})


def test_spec_augment_only_in_training_and_reproducible():
    enc = AudioEncoder(**{**SMALL, "norm": "group"})
    wave = torch.randn(2, enc.clip_samples)
    enc.eval()
    clean = enc(wave)
    enc.train()
    torch.testing.assert_close(enc(wave, augment=False), clean)  # group norm: train mode alone changes nothing
    a = enc(wave, generator=torch.Generator().manual_seed(3))
    b = enc(wave, generator=torch.Generator().manual_seed(3))
    c = enc(wave, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, clean) and not torch.allclose(a, c)


def test_rejects_unknown_backbone():
    with pytest.raises(ValueError, match="backbone"):
        AudioEncoder(backbone="vgg11")
    with pytest.raises(ValueError, match="norm"):
        AudioEncoder(**{**SMALL, "norm": "layer"})


def test_export_round_trip_weights_only(tmp_path):
    enc = AudioEncoder(**{**SMALL, "n_mels": 24, "freq_masks": 1}).eval()
    for p in enc.parameters():  # not the initial values, so a silent re-initialisation would show
        p.data.add_(0.01 * torch.randn_like(p))
    path = export_audio_encoder(enc, tmp_path / "sub" / "audio.pt")
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"format", "version", "config", "state_dict"}
    loaded = load_audio_encoder(path)
    assert loaded.config == enc.config and loaded.frontend.n_mels == 24 and not loaded.training
    wave = torch.randn(2, enc.clip_samples)
    torch.testing.assert_close(loaded(wave), enc(wave))
    with pytest.raises(FileExistsError, match="audio.pt"):
        export_audio_encoder(enc, path)


def test_load_rejects_foreign_and_unsafe_files(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        load_audio_encoder(tmp_path / "other.pt")
    torch.save({"format": "x", "fn": print}, tmp_path / "code.pt")  # a pickle that references code
    with pytest.raises(ValueError, match="code.pt"):
        load_audio_encoder(tmp_path / "code.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_audio_encoder(tmp_path / "missing.pt")


def test_resnet50_encoder_forward_and_backward_reach_the_stem(single_thread):
    """The paper's backbone (Bottleneck blocks [3, 4, 6, 3]) at width 8: 512-d unit vectors, gradients in conv1."""
    enc = AudioEncoder(embed_dim=512, backbone="resnet50", width=8, n_mels=32, n_fft=256, hop_length=160,
                       clip_seconds=0.5).train()
    assert [len(getattr(enc.backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert isinstance(enc.backbone.layer1[0], torchvision.models.resnet.Bottleneck)
    assert enc.proj.in_features == 8 * 8 * 4  # width * 8 channels * Bottleneck expansion 4
    out = enc(torch.randn(2, enc.clip_samples), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 512)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    (out @ torch.randn(512)).sum().backward()  # a projection: the norm itself has no gradient
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert enc.backbone.conv1.weight.grad.abs().sum() > 0
