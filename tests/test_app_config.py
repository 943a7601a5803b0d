"""The page's config and start-up checks (no server): what `python -m experiments.app` says before loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.app.__main__ import main
from experiments.app.config import DEFAULT_CONFIG, REPO_ROOT, AppConfigError, load_app_config


def test_toyworld_config_names_the_committed_toy_world_files():
    cfg = load_app_config(DEFAULT_CONFIG)
    files = dict(cfg.model_files())
    weights = REPO_ROOT / "experiments" / "toyworld" / "weights"
    assert files == {"generator": str(weights / "toy_stylegan2.pt"), "clip": str(weights / "toy_clip.pt"),
                     "audio_encoder": str(weights / "toy_audio_encoder.pt"), "mapper": str(weights / "toy_mapper.pt")}


def test_missing_files_are_listed_with_where_each_is_expected(tmp_path, capsys):
    config = tmp_path / "page.yaml"
    config.write_text(yaml.safe_dump({"generator": "weights/nowhere.pkl", "clip": "ViT-B/32",
                                      "audio_encoder": str(tmp_path / "enc.pt")}))
    assert main(["--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"generator: expected at {REPO_ROOT / 'weights' / 'nowhere.pkl'}" in err
    assert f"audio_encoder: expected at {tmp_path / 'enc.pt'}" in err
    assert "ViT-B-32.pt" in err  # a CLIP name is looked for in the clip cache, not as a relative path
    assert "make weights" in err


@pytest.mark.parametrize("values, reason", [
    ({"stepz": 3}, "unknown setting(s) ['stepz']"),
    ({"live_chunk_seconds": 0.8}, "live_chunk_seconds=0.8"),
    ({"live_frames_per_chunk": 0}, "live_frames_per_chunk=0"),
    ({"steps": 600, "max_steps": 500}, "max_steps=500"),
    ({"max_upload_mb": 0}, "max_upload_mb=0"),
    ({"video_settings": {"fpz": 3}}, "video_settings must map animate settings"),
    ({"video_settings": {"fps": -1}}, "need fps > 0"),
])
def test_bad_config_values_are_named(tmp_path, values, reason):
    config = tmp_path / "page.yaml"
    config.write_text(yaml.safe_dump({"generator": "g.pt", "clip": "c.pt", "audio_encoder": "a.pt", **values}))
    with pytest.raises(AppConfigError, match=str(config)) as err:
        load_app_config(config)
    assert reason in str(err.value)


def test_wikiart_config_shows_the_licence_note():
    cfg = load_app_config(Path(DEFAULT_CONFIG).with_name("wikiart.yaml"))
    assert "non-commercial" in cfg.generator_licence and cfg.steps == 300 and cfg.lambda_sim == 0.008
