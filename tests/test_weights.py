"""`make weights`: the registry is complete, downloads resume from a partial file, checksums are enforced, and an
offline machine gets a list of what could not be fetched (exit status 1)."""

import hashlib
import io
import json
import urllib.error

import pytest

from experiments import weights
from experiments.cli_errors import UsageError


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, status: int, headers: dict):
        super().__init__(body)
        self.status, self.headers = status, headers


def fake_server(payload: bytes, honour_range: bool = True, content_type: str = "application/octet-stream"):
    """urlopen stand-in serving `payload`, answering Range requests with 206; records the requests."""
    requests = []

    def urlopen(req, timeout=None):
        rng = req.get_header("Range")
        requests.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng and honour_range else 0
        if start >= len(payload) and rng:
            raise urllib.error.HTTPError(req.full_url, 416, "Range Not Satisfiable", {}, None)
        body = payload[start:]
        return FakeResponse(body, 206 if start else 200,
                            {"Content-Length": str(len(body)), "Content-Type": content_type})

    return urlopen, requests


def test_registry_entries_are_complete():
    reg = weights.load_registry()
    names = [e["name"] for e in reg["generators"]]
    assert "wikiart-1024-uncond" in names
    for e in reg["generators"]:
        assert e["url"].startswith("https://") and e["licence"] and e["file"].startswith("weights/")
        assert e["sha256"] is None or len(e["sha256"]) == 64
        assert isinstance(e["url_verified"], bool)
    defaults = weights.select(reg, [])
    assert [e["name"] for e in defaults[0]] == ["ViT-B/32"] and [e["name"] for e in defaults[1]] == [
        "wikiart-1024-uncond"]
    with pytest.raises(UsageError, match="nope"):
        weights.select(reg, ["nope"])


def test_download_resumes_a_partial_file(tmp_path):
    payload = bytes(range(256)) * 1000
    dest = tmp_path / "w" / "g.pkl"
    dest.parent.mkdir()
    (tmp_path / "w" / "g.pkl.part").write_bytes(payload[:100_000])
    urlopen, requests = fake_server(payload)
    weights.download("https://example.org/g.pkl", dest, hashlib.sha256(payload).hexdigest(), urlopen=urlopen)
    assert requests == ["bytes=100000-"]
    assert dest.read_bytes() == payload and not (tmp_path / "w" / "g.pkl.part").exists()


def test_download_restarts_when_the_server_ignores_range(tmp_path):
    payload = b"x" * 5000 + b"y" * 5000
    dest = tmp_path / "g.pt"
    (tmp_path / "g.pt.part").write_bytes(b"garbage!")
    urlopen, _ = fake_server(payload, honour_range=False)
    weights.download("https://example.org/g.pt", dest, urlopen=urlopen)
    assert dest.read_bytes() == payload


def test_checksum_mismatch_keeps_the_file_aside(tmp_path):
    urlopen, _ = fake_server(b"not the checkpoint")
    dest = tmp_path / "g.pt"
    with pytest.raises(weights.DownloadError, match="sha256"):
        weights.download("https://example.org/g.pt", dest, "0" * 64, urlopen=urlopen)
    assert not dest.exists() and (tmp_path / "g.pt.sha256-mismatch").exists()


def test_html_page_is_not_saved_as_a_checkpoint(tmp_path):
    urlopen, _ = fake_server(b"<html>moved</html>", content_type="text/html; charset=utf-8")
    with pytest.raises(weights.DownloadError, match="web page"):
        weights.download("https://example.org/g.pt", tmp_path / "g.pt", urlopen=urlopen)


def test_offline_lists_what_could_not_be_fetched(tmp_path, monkeypatch, capsys):
    reg = json.loads(weights.REGISTRY.read_text())
    for e in reg["generators"]:
        e["file"] = str(tmp_path / e["file"])
    registry = tmp_path / "weights.json"
    registry.write_text(json.dumps(reg))

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("clip.clip._download", lambda *a, **k: offline())
    rc = weights.main(["--registry", str(registry), "--clip-root", str(tmp_path / "clip"), "wikiart-1024-uncond",
                       "landscape-256", "ViT-B/32"], urlopen=offline)
    err = capsys.readouterr().err
    assert rc == 1
    for name in ("ViT-B/32", "wikiart-1024-uncond", "landscape-256"):
        assert name in err
    assert "WikiArt_Uncond2.pkl" in err and str(tmp_path / "weights/stylegan2-landscape-256.pt") in err


def test_present_file_is_not_downloaded_again(tmp_path):
    entry = dict(weights.load_registry()["generators"][0], file=str(tmp_path / "g.pkl"))
    (tmp_path / "g.pkl").write_bytes(b"already here")

    def must_not_download(*a, **k):
        raise AssertionError("downloaded although present")

    assert "already present" in weights.fetch_generator(entry, urlopen=must_not_download)
