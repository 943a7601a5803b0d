"""Generator checkpoints in the three formats people have: loading against the naive reference, conversion, safety."""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from checkpoint_stubs import nvlabs_tensors, tf_variables, write_nvlabs_pickle, write_tf_pickle
from conftest import build_tiny_generator
from stylegan2_reference import from_nvlabs, from_rosinality, from_tensorflow

from lightning_modules.networks.checkpoints import (
    NVLABS,
    ROSINALITY,
    TENSORFLOW,
    CheckpointFormatError,
    load_generator,
    main,
    read_checkpoint,
    save_generator,
)
from lightning_modules.networks.pickles import UnsafePickleError

REPO = Path(__file__).resolve().parents[1]
# Not a multiplier pattern on purpose: loaders must read channels from tensor shapes.
CHANNELS = {4: 24, 8: 20, 16: 12}


def _nvlabs_kwargs(conv_clamp=256, n_mlp=2, **overrides):
    kw = dict(
        z_dim=16,
        w_dim=16,
        c_dim=0,
        img_resolution=16,
        img_channels=3,
        mapping_kwargs=dict(num_layers=n_mlp),
        synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=conv_clamp),
    )
    return {**kw, **overrides}


def _max_error(G, reference, seed=0) -> float:
    gen = torch.Generator().manual_seed(seed)
    w_plus = torch.randn(2, G.n_latent, G.style_dim, generator=gen)
    z = torch.randn(2, G.style_dim, generator=gen)
    torch.testing.assert_close(G.mapping(z).double(), reference.mapping(z), rtol=1e-5, atol=1e-5)
    return (G.synthesis(w_plus).double() - reference.synthesis(w_plus)).abs().max().item()


def _same_images(a, b) -> bool:
    w_plus = torch.randn(2, a.n_latent, a.style_dim)
    return torch.equal(a.synthesis(w_plus), b.synthesis(w_plus))


# ---------------------------------------------------------------------------------------------------- rosinality .pt


def test_rosinality_file_round_trip_matches_reference(tiny_generator_path):
    original = build_tiny_generator()
    G = load_generator(tiny_generator_path)
    assert read_checkpoint(tiny_generator_path).format == ROSINALITY
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert _same_images(G, original)
    saved = torch.load(tiny_generator_path, weights_only=True)
    assert set(saved["g_ema"]) == set(original.state_dict())
    assert _max_error(G, from_rosinality(saved["g_ema"])) <= 1e-5
    # The average w is stored (estimated once at save time) and used for truncation.
    torch.testing.assert_close(G.mean_latent(), original.mean_latent())
    torch.testing.assert_close(saved["latent_avg"], original.mean_latent()[0])


def test_rosinality_training_checkpoint_with_args_namespace(tmp_path):
    G0 = build_tiny_generator(seed=3)
    optim = torch.optim.Adam(G0.parameters(), lr=0.002)
    G0(torch.randn(2, G0.style_dim)).mean().backward()
    optim.step()
    ckpt = {
        "g": G0.state_dict(),
        "d": {"convs.0.0.weight": torch.randn(4, 3, 1, 1)},
        "g_ema": G0.state_dict(),
        "g_optim": optim.state_dict(),
        "d_optim": {},
        "args": argparse.Namespace(size=16, latent=32, n_mlp=2, channel_multiplier=2),
        "ada_aug_p": 0.1,
    }
    path = tmp_path / "060000.pt"
    torch.save(ckpt, path)
    G = load_generator(path)
    assert _same_images(G, G0)
    assert G.latent_avg is None  # training checkpoints have none: mean_latent() estimates it
    # A bare g_ema state dict loads too, and so does the pre-zip torch.save format of older rosinality files.
    torch.save(G0.state_dict(), tmp_path / "bare.pt")
    assert _same_images(load_generator(tmp_path / "bare.pt"), G0)
    torch.save(ckpt, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert _same_images(load_generator(tmp_path / "legacy.pt"), G0)


def test_conv_clamp_and_lr_mlp_survive_save(tmp_path):
    G0 = build_tiny_generator(conv_clamp=0.5, lr_mlp=0.05)
    save_generator(G0, tmp_path / "g.pt")
    G = load_generator(tmp_path / "g.pt")
    assert G.kwargs["conv_clamp"] == 0.5 and G.kwargs["lr_mlp"] == 0.05
    assert _same_images(G, G0)
    with pytest.raises(FileExistsError, match="g.pt"):
        save_generator(G0, tmp_path / "g.pt")


def test_missing_derivable_buffers_are_rebuilt_with_a_warning(tmp_path):
    G0 = build_tiny_generator()
    state = {k: v for k, v in G0.state_dict().items() if not k.startswith("noises.") and "kernel" not in k}
    torch.save({"g_ema": state}, tmp_path / "no_buffers.pt")
    with pytest.warns(UserWarning, match=r"no_buffers\.pt: rebuilt buffers .*noises\.noise_0"):
        G = load_generator(tmp_path / "no_buffers.pt")
    for key in ("convs.0.conv.blur.kernel", "to_rgbs.1.upsample.kernel"):
        torch.testing.assert_close(G.state_dict()[key], G0.state_dict()[key])
    # The rebuilt noise is fixed (seeded), so two loads give the same image.
    with pytest.warns(UserWarning):
        assert _same_images(G, load_generator(tmp_path / "no_buffers.pt"))


def test_missing_or_unexpected_parameters_are_errors(tmp_path):
    state = build_tiny_generator().state_dict()
    missing = {k: v for k, v in state.items() if k != "convs.1.noise.weight"}
    torch.save({"g_ema": missing}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointFormatError, match=r"missing\.pt: .*missing \[convs\.1\.noise\.weight\]"):
        load_generator(tmp_path / "missing.pt")
    extra = {**state, "convs.1.extra_bias": torch.zeros(3)}
    torch.save({"g_ema": extra}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointFormatError, match=r"unexpected \[convs\.1\.extra_bias\]"):
        load_generator(tmp_path / "extra.pt")


# ---------------------------------------------------------------------------------------------------- NVlabs .pkl


@pytest.mark.parametrize("conv_clamp, n_mlp", [(256, 8), (0.5, 2)])  # 0.5 is active on these weights
def test_nvlabs_pickle_matches_reference(tmp_path, conv_clamp, n_mlp):
    tensors = nvlabs_tensors(16, 16, n_mlp, CHANNELS, seed=1)
    marker = tmp_path / "marker"
    write_nvlabs_pickle(tmp_path / "network-snapshot.pkl", tensors, _nvlabs_kwargs(conv_clamp, n_mlp), marker)
    G = load_generator(tmp_path / "network-snapshot.pkl")
    assert read_checkpoint(tmp_path / "network-snapshot.pkl").format == NVLABS
    assert G.channels == CHANNELS and G.kwargs["n_mlp"] == n_mlp and G.kwargs["conv_clamp"] == conv_clamp
    assert _max_error(G, from_nvlabs(tensors, clamp=conv_clamp)) <= 1e-5
    if conv_clamp < 1:  # the clamp changed the image, so the comparison checked it
        assert _max_error(G, from_nvlabs(tensors)) > 1e-2
    torch.testing.assert_close(G.mean_latent()[0], tensors["mapping.w_avg"])
    # Neither the embedded module source nor the persistence code ran, nor was anything of theirs imported.
    assert not marker.exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


def test_nvlabs_conditional_or_foreign_generators_are_rejected(tmp_path):
    tensors = nvlabs_tensors(16, 16, 2, CHANNELS)
    write_nvlabs_pickle(tmp_path / "cond.pkl", tensors, _nvlabs_kwargs(c_dim=10), tmp_path / "m")
    with pytest.raises(CheckpointFormatError, match=r"cond\.pkl: a conditional generator \(c_dim=10\)"):
        load_generator(tmp_path / "cond.pkl")
    no_const = {k: v for k, v in tensors.items() if k != "synthesis.b4.const"}
    write_nvlabs_pickle(tmp_path / "sg3.pkl", no_const, _nvlabs_kwargs(), tmp_path / "m")
    with pytest.raises(CheckpointFormatError, match="not a StyleGAN2 generator"):
        load_generator(tmp_path / "sg3.pkl")


# ---------------------------------------------------------------------------------------------------- TensorFlow .pkl


@pytest.mark.parametrize("n_mlp", [8, 3])
def test_tensorflow_pickle_matches_reference(tmp_path, n_mlp):
    variables = tf_variables(16, 16, n_mlp, CHANNELS, seed=2)
    marker = tmp_path / "marker"
    write_tf_pickle(tmp_path / "WikiArt_Uncond2.pkl", variables, marker)
    raw = (tmp_path / "WikiArt_Uncond2.pkl").read_bytes()
    assert b"numpy.core.multiarray" in raw and b"numpy._core" not in raw  # written like a numpy-1 pickle
    G = load_generator(tmp_path / "WikiArt_Uncond2.pkl")
    assert read_checkpoint(tmp_path / "WikiArt_Uncond2.pkl").format == TENSORFLOW
    assert G.channels == CHANNELS and G.kwargs["n_mlp"] == n_mlp and G.size == 16
    assert _max_error(G, from_tensorflow(variables)) <= 1e-5
    torch.testing.assert_close(G.mean_latent()[0], torch.from_numpy(variables["dlatent_avg"]))
    assert not marker.exists()


def test_tensorflow_conditional_model_gives_a_clear_error(tmp_path):
    variables = tf_variables(16, 16, 2, CHANNELS, label_size=5)
    write_tf_pickle(tmp_path / "network-snapshot-012052.pkl", variables, tmp_path / "m", label_size=5)
    with pytest.raises(
        CheckpointFormatError, match=r"012052\.pkl: a conditional TensorFlow generator \(label_size=5\)"
    ):
        load_generator(tmp_path / "network-snapshot-012052.pkl")


# ---------------------------------------------------------------------------------------------------- safety


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_would_run_code_is_rejected_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    tensors = nvlabs_tensors(16, 16, 2, CHANNELS)
    path = tmp_path / "evil.pkl"
    write_nvlabs_pickle(path, tensors, _nvlabs_kwargs(), tmp_path / "m", extra={"payload": _Exploit(marker)})
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: the pickle asks for (posix|os)\.system"):
        load_generator(path)
    with open(tmp_path / "bare_evil.pkl", "wb") as f:
        pickle.dump(_Exploit(marker), f)
    with pytest.raises(UnsafePickleError):
        load_generator(tmp_path / "bare_evil.pkl")
    # A torch.save archive goes through torch.load(weights_only=True), which refuses the same payload.
    torch.save({"g_ema": build_tiny_generator().state_dict(), "payload": _Exploit(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError, match=r"evil\.pt: torch\.load\(weights_only=True\) refused"):
        load_generator(tmp_path / "evil.pt")
    assert not marker.exists()


def test_trust_pickle_admits_globals_outside_the_allowlist(tmp_path):
    tensors = nvlabs_tensors(16, 16, 2, CHANNELS)
    path = tmp_path / "fork.pkl"
    write_nvlabs_pickle(path, tensors, _nvlabs_kwargs(), tmp_path / "m", extra={"train_time": datetime.timedelta(9)})
    with pytest.raises(UnsafePickleError, match=r"datetime\.timedelta.*trust_pickle=True"):
        load_generator(path)
    assert _max_error(load_generator(path, trust_pickle=True), from_nvlabs(tensors, clamp=256)) <= 1e-5


def test_unrecognised_files_name_the_file_and_what_was_found(tmp_path):
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(CheckpointFormatError, match=r"list\.pkl: a pickle holding a list of \[int, int, int\]"):
        load_generator(tmp_path / "list.pkl")
    torch.save({"model": {"fc.weight": torch.zeros(2)}}, tmp_path / "classifier.pt")
    with pytest.raises(CheckpointFormatError, match=r"classifier\.pt: a torch file holding a dict with keys \[model\]"):
        load_generator(tmp_path / "classifier.pt")
    (tmp_path / "noise.bin").write_bytes(os.urandom(64))
    with pytest.raises(pickle.UnpicklingError, match=r"noise\.bin"):
        load_generator(tmp_path / "noise.bin")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_generator(tmp_path / "absent.pt")


# ---------------------------------------------------------------------------------------------------- convert CLI


def test_convert_round_trip_every_format(tmp_path, tiny_generator_path, capsys):
    sources = {"rosinality": Path(tiny_generator_path)}
    sources["nvlabs"] = tmp_path / "nv.pkl"
    write_nvlabs_pickle(sources["nvlabs"], nvlabs_tensors(16, 16, 2, CHANNELS), _nvlabs_kwargs(0.5), tmp_path / "m")
    sources["tensorflow"] = tmp_path / "tf.pkl"
    write_tf_pickle(sources["tensorflow"], tf_variables(16, 16, 2, CHANNELS), tmp_path / "m")
    for name, src in sources.items():
        dst = tmp_path / f"{name}.pt"
        assert main(["convert", str(src), str(dst)]) == 0
        summary = capsys.readouterr().out
        source, converted = load_generator(src), load_generator(dst)
        assert f"resolution 16px, n_latent {source.n_latent}" in summary
        assert f"parameters {sum(p.numel() for p in source.parameters()):,}" in summary
        assert read_checkpoint(src).format in summary
        assert _same_images(converted, source)
        assert converted.kwargs == source.kwargs
        torch.testing.assert_close(converted.mean_latent(), source.mean_latent())
        # The output is a rosinality file: g_ema with its keys, readable with weights_only=True.
        saved = torch.load(dst, weights_only=True)
        assert set(saved["g_ema"]) == set(source.state_dict())
    # An existing output is not overwritten unless asked.
    assert main(["convert", str(sources["nvlabs"]), str(tmp_path / "tensorflow.pt")]) == 1
    assert "exists" in capsys.readouterr().err
    assert main(["convert", str(sources["nvlabs"]), str(tmp_path / "tensorflow.pt"), "--overwrite"]) == 0


def test_convert_module_entry_point(tmp_path):
    src = tmp_path / "tf.pkl"
    write_tf_pickle(src, tf_variables(16, 16, 2, CHANNELS), tmp_path / "m")
    dst = tmp_path / "out.pt"
    result = subprocess.run(
        [sys.executable, "-m", "lightning_modules.networks.checkpoints", "convert", str(src), str(dst)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert TENSORFLOW in result.stdout and "n_latent 6" in result.stdout
    assert _same_images(load_generator(dst), load_generator(src))
