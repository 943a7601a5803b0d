"""The official audio encoder variant loads the released state-dict layout and computes what the official
model (a 1->3 conv, then timm's resnet18 with 512 classes) computes with the same weights."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from lightning_modules.audio_export import export_audio_encoder, load_audio_encoder
from lightning_modules.networks.official_audio_encoder import OfficialAudioEncoder


class TimmOfficialModel(nn.Module):
    """The official AudioEncoder as its code defines it (without ImageNet init): the oracle."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, (3, 3))
        self.feature_extractor = timm.create_model("resnet18", num_classes=512, pretrained=False)

    def forward(self, x):
        return self.feature_extractor(self.conv(x))


@pytest.fixture(scope="module")
def oracle():
    torch.manual_seed(0)
    model = TimmOfficialModel()
    with torch.no_grad():  # random BatchNorm statistics, so eval mode is not an identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _waveforms() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    t = torch.arange(3 * 44100) / 44100
    tones = torch.stack([torch.sin(2 * math.pi * f * t) for f in (330.0, 2500.0)])
    return 0.4 * tones + 0.05 * torch.randn(2, t.numel(), generator=g)


def _inputs_only(encoder: OfficialAudioEncoder) -> OfficialAudioEncoder:
    """Make `encoder` return the (flattened) network input instead of running the ResNet: tests about what
    reaches the network then cost no forward pass."""
    encoder.embed_spectrogram = lambda spec: spec.flatten(1)
    return encoder


def test_released_layout_loads_and_matches_the_official_forward(tmp_path, oracle):
    for prefix in ("module.", ""):  # a DataParallel save and a plain one
        torch.save({prefix + k: v for k, v in oracle.state_dict().items()}, tmp_path / f"{prefix}w.pth")
    encoder = load_audio_encoder(tmp_path / "module.w.pth")
    plain = load_audio_encoder(tmp_path / "w.pth")
    assert isinstance(encoder, OfficialAudioEncoder) and not encoder.training
    for k, v in oracle.state_dict().items():
        assert torch.equal(encoder.state_dict()[k], v) and torch.equal(plain.state_dict()[k], v)
    wave = _waveforms()
    with torch.no_grad():
        spec = encoder.frontend(wave)
        expected = torch.nn.functional.normalize(oracle(spec), dim=-1)
        got = encoder(wave)
    assert got.shape == (2, 512)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_state_dict_keys_are_the_released_files_keys(oracle):
    ours = OfficialAudioEncoder().state_dict()
    theirs = oracle.state_dict()
    assert set(ours) == set(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_export_round_trip_and_overrides(tmp_path, oracle):
    path = tmp_path / "resnet18_57.pth"
    torch.save(oracle.state_dict(), path)
    encoder = load_audio_encoder(path, crop="manipulation")
    assert encoder.frontend.crop == "manipulation" and encoder.config["crop"] == "manipulation"
    exported = export_audio_encoder(encoder, tmp_path / "official_export.pt")
    again = load_audio_encoder(exported)
    assert isinstance(again, OfficialAudioEncoder) and again.config == encoder.config
    assert again.frontend.crop == "manipulation"
    for k, v in encoder.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_embed_clips_takes_whole_clips_of_any_length():
    encoder = _inputs_only(OfficialAudioEncoder().eval())
    long = torch.cat([_waveforms()[0]] * 4)  # 12 s: longer than the 864-frame window
    short = _waveforms()[1, : 2 * 44100]
    both = encoder.embed_clips([short, long])
    torch.testing.assert_close(both[0], encoder(short[None])[0], rtol=0, atol=0)
    torch.testing.assert_close(both[1], encoder(long[None])[0], rtol=0, atol=0)
    # a waveform cropped to the window first is not the same input (dB reference, frame grid)
    cropped = long[(long.numel() - encoder.clip_samples) // 2:][: encoder.clip_samples]
    assert not torch.equal(encoder(cropped[None])[0], both[1])
    # manipulation policy: seeded random crop of the long clip, zero padding after the short one
    m1 = encoder.embed_clips([short, long], crop="manipulation", generator=torch.Generator().manual_seed(5))
    m2 = encoder.embed_clips([short, long], crop="manipulation", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(m1, m2, rtol=0, atol=0)
    assert not torch.equal(m1[1], both[1])
    spec = encoder.frontend.fitted_log_mel(short[None], policy="manipulation")[0]
    width = encoder.frontend.num_frames(short.numel())
    assert torch.equal(spec[:, :width], encoder.frontend.log_mel(short)) and spec[:, width:].abs().max() == 0


def test_spec_augment_only_when_training_and_asked():
    encoder = _inputs_only(OfficialAudioEncoder(spec_augment=True))
    wave = _waveforms()[:, : 44100]
    encoder.eval()
    plain = encoder(wave)
    torch.testing.assert_close(encoder(wave, augment=True), plain, rtol=0, atol=0)
    encoder.train()
    a = encoder(wave, generator=torch.Generator().manual_seed(3))
    b = encoder(wave, generator=torch.Generator().manual_seed(3))
    c = encoder(wave, augment=False, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # without augmentation: the train-mode front end alone (random padding offset from the same generator)
    torch.testing.assert_close(c, encoder.frontend(wave, generator=torch.Generator().manual_seed(3)).flatten(1))
    assert not torch.equal(a, c)  # the masks changed the input


def test_wrong_files_are_rejected_with_the_path(tmp_path, oracle):
    other = tmp_path / "not_official.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not_official.pth"):
        load_audio_encoder(other)
    partial = tmp_path / "partial.pth"
    state = dict(oracle.state_dict())
    del state["feature_extractor.layer4.1.bn2.weight"]
    torch.save(state, partial)
    with pytest.raises(ValueError, match="partial.pth"):
        load_audio_encoder(partial)


@pytest.mark.gpu
def test_cuda_front_end_equals_cpu_under_autocast(oracle):
    encoder = OfficialAudioEncoder().eval()
    encoder.load_state_dict(oracle.state_dict())
    wave = _waveforms()
    with torch.no_grad():
        cpu_spec, cpu_emb = encoder.frontend(wave), encoder(wave)
        encoder.cuda()
        with torch.autocast("cuda", dtype=torch.float16):  # the front end opts out; the ResNet runs in fp16
            gpu_spec = encoder.frontend(wave.cuda()).cpu()
            gpu_emb = encoder(wave.cuda()).cpu()
    torch.testing.assert_close(gpu_spec, cpu_spec, rtol=0, atol=1e-6)
    assert gpu_emb.dtype == torch.float32 and gpu_emb.shape == cpu_emb.shape
    torch.testing.assert_close(gpu_emb, cpu_emb, rtol=0, atol=5e-3)
