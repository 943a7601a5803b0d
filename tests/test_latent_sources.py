"""Edit sources: seed/mean/file specs, W/W+ files in the layouts inversion tools write, n_latent from the generator."""

import numpy as np
import pytest
import torch

from datamodules.latent_sources import parse_sources, read_latent_file, seed_to_z


def test_parse_seed_and_mean_specs():
    sources = parse_sources([7, "seed:3", "12", "mean"])
    assert [(s.kind, s.seed, s.name) for s in sources] == [
        ("seed", 7, "seed7"), ("seed", 3, "seed3"), ("seed", 12, "seed12"), ("mean", None, "mean")]


def test_bad_spec_and_duplicates_raise():
    with pytest.raises(ValueError, match="painting.jpg"):
        parse_sources(["painting.jpg"])
    with pytest.raises(ValueError, match="seed7"):
        parse_sources([7, "seed:7"])
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        parse_sources(["nope.pt"])


def test_seed_to_z_is_numpy_randomstate():
    # NVlabs' generate.py draws z = RandomState(seed).randn(1, z_dim): the same seed names the same sample.
    expect = np.random.RandomState(85).randn(1, 16)
    torch.testing.assert_close(seed_to_z(85, 16), torch.from_numpy(expect).float())


@pytest.mark.parametrize("layout", ["w", "w_1d", "wplus", "wplus_batch1", "dict", "projector", "npy"])
def test_latent_file_layouts(tmp_path, layout):
    L, D = 10, 16
    wp = torch.randn(L, D)
    w = torch.randn(D)
    path = tmp_path / ("code.npy" if layout == "npy" else "code.pt")
    obj = {
        "w": w[None], "w_1d": w, "wplus": wp, "wplus_batch1": wp[None],
        "dict": {"w_plus": wp[None], "names": ["starry"]},
        "projector": {"imgs/starry.png": {"img": torch.zeros(3, 4, 4), "latent": wp, "noise": [torch.zeros(1)]}},
    }
    if layout == "npy":
        np.save(path, wp.numpy())
    else:
        torch.save(obj[layout], path)
    codes = read_latent_file(path)
    assert len(codes) == 1
    name, code = codes[0]
    expect = w if layout in ("w", "w_1d") else wp
    torch.testing.assert_close(code, expect)
    assert name == ("starry" if layout in ("dict", "projector") else None)


def test_batch_file_gives_one_source_per_code(tmp_path):
    codes = torch.randn(3, 10, 16)
    torch.save(codes, tmp_path / "inversions.pt")
    sources = parse_sources([str(tmp_path / "inversions.pt")])
    assert [s.name for s in sources] == ["inversions-0", "inversions-1", "inversions-2"]
    for s, c in zip(sources, codes):
        torch.testing.assert_close(s.latent, c)


def test_unreadable_latent_files_name_the_file(tmp_path):
    bad = tmp_path / "weird.pt"
    torch.save({"something": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="weird.pt"):
        read_latent_file(bad)
    four_d = tmp_path / "four.pt"
    torch.save(torch.zeros(1, 2, 3, 4), four_d)
    with pytest.raises(ValueError, match="four.pt"):
        read_latent_file(four_d)
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        read_latent_file(pickled)
