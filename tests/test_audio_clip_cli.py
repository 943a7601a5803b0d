"""The training entry point: configs and sweep command lines parse, run dirs and resume paths resolve,
the config is saved without aborting, and short runs train under bf16-mixed, 32 and (GPU) 16-mixed."""

import os
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from datamodules.soundzoo import write_sound_set
from datamodules.vggsound import VGGSoundDataModule
from experiments import train
from lightning_modules.audio_clip import AudioCLIPModule, warmup_cosine
from lightning_modules.networks.audio_encoder import AudioEncoder
from lightning_modules.torch_threads import TorchThreads

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "experiments" / "audio_clip").glob("*.yaml"))
SWEEP = REPO / "experiments" / "sweeps" / "audio_clip.yaml"


def _print_config(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        train.main(args)
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_parses_with_the_cli(config, capsys):
    parsed = _print_config(["fit", "--config", str(config), "--print_config"], capsys)
    raw = yaml.safe_load(config.read_text())
    assert parsed["model"]["loss"] == raw["model"]["loss"]
    assert parsed["model"]["encoder"]["init_args"]["backbone"] == raw["model"]["encoder"]["init_args"]["backbone"]
    assert parsed["data"]["batch_size"] == raw["data"]["batch_size"]


def _sample(spec: dict):
    """A value the sweep could propose: the last listed value, or the upper end of a distribution."""
    return spec["values"][-1] if "values" in spec else spec["max"]


def test_sweep_command_with_sample_parameters_is_accepted(capsys):
    sweep = yaml.safe_load(SWEEP.read_text())
    assert sweep["metric"]["name"] == "val/top1"  # a metric the module logs
    command = sweep["command"]
    assert command[:4] == ["${env}", "python", "-m", "experiments.train"] and command[-1] == "${args}"
    # What the agent's ${args} expands to: one --key=value per parameter.
    values = {key: _sample(spec) for key, spec in sweep["parameters"].items()}
    args = [a for a in command[4:-1]] + [f"--{k}={v}" for k, v in values.items()] + ["--print_config"]
    args = [str(REPO / a) if a.endswith(".yaml") else a for a in args]
    parsed = _print_config(args, capsys)
    for key, value in values.items():
        section, name = key.split(".")
        assert parsed[section][name] == value, key


def test_run_dir_and_wandb_id_per_run_and_per_sweep_trial(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    assert train.run_dir_for(tmp_path / "a") == tmp_path / "a"
    first, again, other = (train.stable_run_id(tmp_path / d) for d in ("a", "a", "b"))
    assert first == again != other  # same run dir, same W&B run: a resumed job continues it
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    monkeypatch.setenv("WANDB_RUN_ID", "run7")
    assert train.run_dir_for(tmp_path / "a") == tmp_path / "a" / "sweeps" / "sw1" / "run7"
    assert train.stable_run_id(tmp_path / "a") == "run7"


def test_resume_picks_the_newest_of_last_and_slurm_checkpoints(tmp_path):
    assert train.newest_resume_checkpoint(tmp_path) is None  # --ckpt_path last on a new run: start fresh
    (tmp_path / "checkpoints").mkdir()
    last, hpc, best = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_3.ckpt", tmp_path / "best.ckpt"
    for i, path in enumerate((last, best, hpc)):
        path.write_bytes(b"x")
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
    assert train.newest_resume_checkpoint(tmp_path) == hpc
    os.utime(last, None)
    assert train.newest_resume_checkpoint(tmp_path) == last


def test_config_saving_never_aborts_and_never_overwrites(tmp_path, tiny_clip_path):
    base = ["--config", str(REPO / "experiments" / "audio_clip" / "demo.yaml"),  # run=False: no subcommand
            f"--model.clip_model={tiny_clip_path}", f"--data.root={tmp_path}", "--trainer.logger=false",
            "--trainer.callbacks=[]", f"--trainer.default_root_dir={tmp_path / 'run'}"]

    def save(*extra):
        cli = train.main([*base, *extra], run=False)
        callback = next(c for c in cli.trainer.callbacks if isinstance(c, train.SaveRunConfig))
        callback.setup(cli.trainer, cli.model, "fit")

    save()
    first = (tmp_path / "run" / "config.yaml").read_text()
    save()  # a resumed run with the same config: nothing new
    assert sorted(p.name for p in (tmp_path / "run").glob("config*.yaml")) == ["config.yaml"]
    save("--model.lr=0.01")  # a resumed run with a changed config: kept next to the first
    assert (tmp_path / "run" / "config.yaml").read_text() == first
    assert "lr: 0.01" in (tmp_path / "run" / "config.1.yaml").read_text()


def test_warmup_cosine_schedule():
    asked = []
    factor = warmup_cosine(4, lambda: asked.append(1) or 14)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0 and not asked  # the horizon is not needed before the decay starts
    assert factor(9) == pytest.approx(0.5)  # halfway through the 10 decay steps
    assert factor(14) == pytest.approx(0.0, abs=1e-12) and factor(20) == pytest.approx(0.0, abs=1e-12)
    assert len(asked) == 1


def test_module_refuses_class_names_that_differ_from_the_data(tiny_clip_path):
    encoder = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, n_mels=32, n_fft=256, clip_seconds=0.5)
    module = AudioCLIPModule(encoder, clip_model=tiny_clip_path, class_names=["rain", "wind"])

    class _Trainer:
        datamodule = type("Data", (), {"class_names": ["wind", "rain"]})()

    module.trainer = _Trainer()
    with pytest.raises(ValueError, match="differ from the datamodule"):
        module.setup("fit")
    module.trainer.datamodule.class_names = ["rain", "wind"]
    module.setup("fit")
    assert module.val_top1.num_classes == 2


def test_torch_threads_callback_sets_and_restores():
    before = torch.get_num_threads()
    callback = TorchThreads(1)
    callback.setup(None, None, "fit")
    assert torch.get_num_threads() == 1
    callback.teardown(None, None, "fit")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        TorchThreads(0)


# ------------------------------------------------------------- precision


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory) -> Path:
    return write_sound_set(tmp_path_factory.mktemp("zoo"), clips_per_class=5, seconds=1.0)


class _Probe(pl.Callback):
    """Records the backbone's output dtype and the loss of every step."""

    def __init__(self):
        self.dtypes, self.losses = set(), []

    def on_fit_start(self, trainer, module):
        module.encoder.backbone.register_forward_hook(lambda m, i, o: self.dtypes.add(o.dtype))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach())


def _short_run(zoo: Path, clip: str, precision: str, accelerator: str = "cpu") -> tuple[_Probe, dict, dict]:
    torch.manual_seed(0)
    encoder = AudioEncoder(embed_dim=64, backbone="resnet18", width=8, n_mels=32, n_fft=256, clip_seconds=1.0)
    module = AudioCLIPModule(encoder, clip_model=clip, loss="infonce", audio_audio_weight=0.5, warmup_steps=1)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    probe = _Probe()
    dm = VGGSoundDataModule(str(zoo), clip_seconds=1.0, crop_seconds=0.5, batch_size=8, num_workers=0,
                            val_fraction=0.25)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=3, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[probe, TorchThreads(1)])
    trainer.fit(module, dm)
    return probe, before, {k: v.cpu() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("precision,backbone_dtype", [("32", torch.float32), ("bf16-mixed", torch.bfloat16)])
def test_short_training_run_on_cpu(precision, backbone_dtype, small_zoo, tiny_clip_path):
    probe, before, after = _short_run(small_zoo, tiny_clip_path, precision)
    assert probe.dtypes == {backbone_dtype}  # mixed precision really runs the ResNet in bf16
    assert len(probe.losses) == 3
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in probe.losses)  # loss in fp32
    assert all(v.dtype == before[k].dtype for k, v in after.items())  # master weights stay fp32
    assert not torch.equal(after["encoder.proj.weight"], before["encoder.proj.weight"])
    assert not torch.equal(after["criterion.log_logit_scale"], before["criterion.log_logit_scale"])


@pytest.mark.gpu
def test_short_training_run_16_mixed_on_gpu(small_zoo, tiny_clip_path):
    probe, before, after = _short_run(small_zoo, tiny_clip_path, "16-mixed", accelerator="gpu")
    assert probe.dtypes == {torch.float16}
    assert all(torch.isfinite(loss) for loss in probe.losses)
    assert not torch.equal(after["encoder.proj.weight"], before["encoder.proj.weight"])
