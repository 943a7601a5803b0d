"""SoundMapper (lightning_modules/networks/mapper.py): layer groups, strength semantics, file format, gradients."""

import pytest
import torch

from lightning_modules.networks.mapper import (
    MAPPER_FORMAT,
    MapperFileError,
    SoundMapper,
    layer_groups,
    load_mapper,
    save_mapper,
)


def _randomised(mapper: SoundMapper, seed: int = 0) -> SoundMapper:
    """Give every weight (the zero-initialised FiLM ones too) a random value, so that every path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mapper.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (p.abs().mean() + 0.5))
    return mapper


def _inputs(mapper: SoundMapper, batch: int = 3, dtype=torch.float32):
    w = torch.randn(batch, mapper.n_latent, mapper.style_dim, dtype=dtype)
    e = torch.nn.functional.normalize(torch.randn(batch, mapper.embed_dim, dtype=dtype), dim=-1)
    return w, e


def test_layer_groups_follow_resolution():
    # 1024 px: 18 rows, StyleCLIP's split.
    assert layer_groups(18) == {"coarse": [0, 1, 2, 3], "medium": [4, 5, 6, 7], "fine": list(range(8, 18))}
    # 32 px (the toy world): no row of 64 px or more, so no fine group.
    assert layer_groups(8) == {"coarse": [0, 1, 2, 3], "medium": [4, 5, 6, 7]}
    assert layer_groups(6) == {"coarse": [0, 1, 2, 3], "medium": [4, 5]}  # 16 px
    assert set(SoundMapper(8, 16, 8).mlps) == {"coarse", "medium"}


@pytest.mark.parametrize("conditioning,row_codes", [("concat", False), ("film", False), ("film", True)])
def test_strength_zero_and_disabled_groups_leave_rows_exactly(conditioning, row_codes):
    mapper = _randomised(SoundMapper(18, 16, 8, conditioning=conditioning, n_layers=3, row_codes=row_codes))
    w, e = _inputs(mapper)
    assert torch.equal(mapper.edit(w, e, strength=0.0), w)
    out = mapper.edit(w, e, strength=1.0, disabled=["medium"])
    assert torch.equal(out[:, 4:8], w[:, 4:8])
    assert not torch.equal(out[:, :4], w[:, :4]) and not torch.equal(out[:, 8:], w[:, 8:])
    per = mapper.edit(w, e, strength={"coarse": 0.0, "fine": 2.0})
    assert torch.equal(per[:, :4], w[:, :4])
    dw = mapper.delta(w, e)
    torch.testing.assert_close(per[:, 8:], w[:, 8:] + 2.0 * dw[:, 8:])
    torch.testing.assert_close(per[:, 4:8], w[:, 4:8] + dw[:, 4:8])  # a group the map leaves out: strength 1
    torch.testing.assert_close(mapper.edit(w, e, strength=-0.5), w - 0.5 * dw)
    with pytest.raises(ValueError, match="unknown layer group"):
        mapper.edit(w, e, disabled=["coarsest"])


@pytest.mark.parametrize("conditioning", ["concat", "film"])
def test_delta_depends_on_source_and_embedding(conditioning):
    mapper = _randomised(SoundMapper(8, 16, 8, conditioning=conditioning, n_layers=3))
    w, e = _inputs(mapper, batch=2)
    dw = mapper.delta(w, e)
    assert not torch.allclose(dw, mapper.delta(w, e.flip(0)))  # another sound, another edit
    assert not torch.allclose(dw, mapper.delta(w.flip(0), e))  # another painting, another edit
    # rows are mapped independently: row r's dw depends on row r only
    w2 = w.clone()
    w2[:, 5] += 1.0
    dw2 = mapper.delta(w2, e)
    assert torch.equal(dw2[:, :5], dw[:, :5]) and torch.equal(dw2[:, 6:], dw[:, 6:])
    # a single embedding broadcasts over the batch
    torch.testing.assert_close(mapper.delta(w, e[0]), mapper.delta(w, e[:1].expand(2, -1)))


@pytest.mark.parametrize("conditioning", ["concat", "film"])
def test_row_codes_let_the_rows_of_a_w_code_move_apart(conditioning):
    # A W code repeats one w on every row: without row codes a group gives all its rows the same dw.
    w = torch.randn(2, 1, 16).expand(2, 8, 16).contiguous()
    e = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    plain = _randomised(SoundMapper(8, 16, 8, conditioning=conditioning, n_layers=3)).delta(w, e)
    assert torch.equal(plain[:, 1:4], plain[:, :1].expand(2, 3, 16))
    coded = _randomised(SoundMapper(8, 16, 8, conditioning=conditioning, n_layers=3, row_codes=True)).delta(w, e)
    for group in ([0, 1, 2, 3], [4, 5, 6, 7]):
        rows = coded[:, group]
        assert (rows[:, 1:] - rows[:, :1]).abs().amax(dim=-1).min() > 1e-4  # every row its own edit


def test_film_starts_as_identity_modulation():
    mapper = SoundMapper(8, 16, 8, conditioning="film", n_layers=3)
    w, e = _inputs(mapper, batch=2)
    torch.testing.assert_close(mapper.delta(w, e), mapper.delta(w, e.flip(0)))


@pytest.mark.parametrize("conditioning", ["concat", "film"])
@pytest.mark.parametrize("row_codes", [False, True])
def test_gradcheck_float64(conditioning, row_codes):
    mapper = _randomised(SoundMapper(6, 4, 3, conditioning=conditioning, n_layers=2, hidden=5,
                                     row_codes=row_codes)).double()
    w, e = _inputs(mapper, batch=2, dtype=torch.float64)
    w.requires_grad_(True)
    e.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w, e: mapper.edit(w, e, strength={"coarse": 0.7, "medium": -1.3}),
                                    (w, e))
    names = [n for n, _ in mapper.named_parameters()]

    def by_params(*ps):
        return torch.func.functional_call(mapper, dict(zip(names, ps)), (w.detach(), e.detach()))

    params = tuple(p.detach().clone().requires_grad_(True) for p in mapper.parameters())
    assert torch.autograd.gradcheck(by_params, params)


def test_bad_shapes_are_named():
    mapper = SoundMapper(8, 16, 8)
    with pytest.raises(ValueError, match=r"w must be \(B, 8, 16\)"):
        mapper.edit(torch.zeros(2, 7, 16), torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"e must be"):
        mapper.edit(torch.zeros(2, 8, 16), torch.zeros(3, 8))


def test_file_round_trip_with_weights_only(tmp_path):
    mapper = _randomised(SoundMapper(8, 16, 8, conditioning="concat", n_layers=3, output_scale=0.2))
    path = save_mapper(mapper, tmp_path / "m.pt", meta={"encoder": "toy", "steps": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == MAPPER_FORMAT and raw["version"] == 1 and raw["config"]["conditioning"] == "concat"
    loaded = load_mapper(path)
    assert loaded.meta == {"encoder": "toy", "steps": 3} and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    w, e = _inputs(mapper)
    torch.testing.assert_close(loaded.edit(w, e), mapper.edit(w, e), rtol=0, atol=0)
    with pytest.raises(FileExistsError):
        save_mapper(mapper, path)


def test_a_file_from_before_row_codes_loads_as_plain_groups(tmp_path):
    mapper = _randomised(SoundMapper(8, 16, 8, n_layers=3))
    path = save_mapper(mapper, tmp_path / "m.pt")
    obj = torch.load(path, weights_only=True)
    del obj["config"]["row_codes"]  # version-1 files written before the option existed
    torch.save(obj, path)
    loaded = load_mapper(path)
    assert loaded.config["row_codes"] is False
    w, e = _inputs(mapper)
    torch.testing.assert_close(loaded.edit(w, e), mapper.edit(w, e), rtol=0, atol=0)


def test_foreign_or_future_files_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(MapperFileError, match="not a SoundMapper file"):
        load_mapper(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(MapperFileError, match="text.pt"):
        load_mapper(tmp_path / "text.pt")
    path = save_mapper(SoundMapper(8, 16, 8), tmp_path / "m.pt")
    obj = torch.load(path, weights_only=True)
    obj["version"] = 99
    torch.save(obj, path)
    with pytest.raises(MapperFileError, match="version 99"):
        load_mapper(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_mapper(tmp_path / "missing.pt")


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pickle_payload_is_refused_unexecuted_and_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "aiartist-sound-mapper", "payload": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(MapperFileError) as refused:
        load_mapper(tmp_path / "evil.pt")
    message = str(refused.value)
    assert "evil.pt" in message and "nothing was executed" in message
    assert "weights_only=False" not in message
    assert not (tmp_path / "pwned.txt").exists()
