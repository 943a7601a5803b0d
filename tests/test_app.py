"""The Gradio page (experiments/app), served by `python -m experiments.app` on a free local port and driven through
its API with gradio_client and through the page itself in headless Chromium (tests/app_browser.py).

One server (module scope) runs on the committed toy world (generator, CLIP, audio encoder, mapper), so every mode
and the live tab are on; the tests assert what the page answers, not how.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from PIL import Image

from datamodules.audio_windows import read_windows
from datamodules.soundzoo import synthesize
from lightning_modules.audio_export import load_audio_encoder

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "experiments" / "toyworld" / "weights"
STEPS = 20
LAMBDA = 0.003
VIDEO_FPS = 4.0  # the test server's videos: few small frames
START_TIMEOUT_S = 600  # a cold start on a loaded 2-core machine may wait for the kernels' build lock

gradio_client = pytest.importorskip("gradio_client", reason="gradio_client is a pinned dependency (pyproject)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_wav(path: Path, wave: np.ndarray, rate: int = 16000) -> str:
    sf.write(path, wave.astype(np.float32), rate)
    return str(path)


@pytest.fixture(scope="module")
def app_files(tmp_path_factory) -> dict:
    """Config + model files for the test server: the committed toy world (generator, CLIP, encoder, mapper)."""
    root = tmp_path_factory.mktemp("app")
    cfg = dict(generator=str(TOY / "toy_stylegan2.pt"), clip=str(TOY / "toy_clip.pt"),
               audio_encoder=str(TOY / "toy_audio_encoder.pt"), mapper=str(TOY / "toy_mapper.pt"),
               generator_licence="test weights: no licence", steps=STEPS, lambda_sim=LAMBDA, max_steps=100,
               gallery_seeds=[0, 1, 2, 3], example_sounds=["fire crackling", "rain"], example_seconds=1.0,
               projection_steps=10, max_upload_mb=1.0, max_audio_seconds=20.0, max_image_megapixels=1.0,
               concurrency_limit=2, preview_every=2, live_chunk_seconds=0.1, live_frames_per_chunk=3,
               missing_hint="make toyworld",
               video_settings={"fps": VIDEO_FPS, "size": 32})
    (root / "app.yaml").write_text(yaml.safe_dump(cfg))
    sounds = root / "sounds"
    sounds.mkdir()
    fire = write_wav(sounds / "fire.wav", synthesize("fire crackling", 77, seconds=1.5))
    return {"root": root, "config": str(root / "app.yaml"), "fire": fire, "encoder": str(TOY / "toy_audio_encoder.pt")}


@pytest.fixture(scope="module")
def app_server(app_files, tmp_path_factory, request):
    """`python -m experiments.app` on a free port (one torch thread); yields its URL and facts; stops it after the
    module and checks that its temporary folder went with it and that nothing was written where it ran."""
    cwd = tmp_path_factory.mktemp("server_cwd")
    port = free_port()
    log = cwd.parent / f"server-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIARTIST_CACHE_DIR": str(app_files["root"] / "cache"),
           "STYLEGAN2_OPS_BUILD_DIR": str(request.config.cache.mkdir("torch_extensions"))}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "experiments.app", "--config", app_files["config"],
                                 "--port", str(port), "--threads", "1"], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Running on local URL" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the page did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    temp_root = Path(re.search(r"temporary files in (\S+)", log.read_text()).group(1))
    yield {"url": url, "proc": proc, "temp_root": temp_root, "log": log, "cwd": cwd}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert not temp_root.exists(), "the server's temporary folder outlived it"
    assert list(cwd.iterdir()) == [], f"the server wrote into its working directory: {list(cwd.iterdir())}"


def edit(client, sound=None, *, example="fire crackling", wplus=None, image=None, seed=1, mode="optimise",
         strength=1.0, steps=STEPS, lambda_sim=LAMBDA, text="", text_mix=0.0, loudness=False, window="center"):
    """One call of the page's /edit endpoint; returns (source path, edit path, status, downloads, video)."""
    handle = gradio_client.handle_file
    return client.predict(handle(sound) if sound else None, None, example, handle(wplus) if wplus else None,
                          handle(image) if image else None, seed, mode, strength, steps, lambda_sim, text, text_mix,
                          loudness, window, api_name="/edit")


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def client(app_server):
    return gradio_client.Client(app_server["url"], verbose=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["optimise", "mapper", "refine"])
def test_each_mode_edits_the_painting(client, app_files, mode):
    source, edited, status, files, video = edit(client, app_files["fire"], mode=mode)
    assert status.startswith("done"), status
    assert video is None, "a sound shorter than the encoder's window gets no video"
    assert np.abs(pixels(edited) - pixels(source)).max() > 0, f"{mode}: the edit equals the source"
    assert sorted(Path(f).suffix for f in files) == [".json", ".png", ".pt"]
    assert np.array_equal(pixels(edited), pixels(next(f for f in files if f.endswith(".png"))))
    metrics = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    encoder = load_audio_encoder(app_files["encoder"])
    used = read_windows(app_files["fire"], encoder.sample_rate, encoder.clip_samples, policy="center")
    assert metrics["window"] == used.describe()  # the window reader's own account of what the encoder heard


@pytest.mark.slow
def test_optimise_streams_frames_and_strength_zero_returns_the_source(client, app_files):
    job = client.submit(None, None, "rain", None, None, 2, "optimise", 1.0, STEPS, LAMBDA, "", 0.0, False, "center",
                        api_name="/edit")
    job.result(timeout=300)
    outputs = job.outputs()
    statuses = [out[2] for out in outputs if isinstance(out, list | tuple) and len(out) == 5]
    assert statuses, outputs
    assert any(re.match(rf"step \d+ of {STEPS}$", s) for s in statuses), statuses  # previews streamed in
    source, edited, status, _, _ = edit(client, app_files["fire"], mode="mapper", strength=0.0)
    assert status.startswith("done") and np.array_equal(pixels(edited), pixels(source)), status


def wav_at_level(path: Path, label: str, seconds: float, dbfs: float) -> str:
    """A procedural clip scaled to an RMS level of `dbfs` dBFS."""
    wave = synthesize(label, 3, seconds=seconds).astype(np.float64)
    wave *= 10 ** (dbfs / 20) / np.sqrt(np.mean(wave**2))
    return write_wav(path, wave)


def w_distance(files: list[str]) -> float:
    latent = torch.load(next(f for f in files if f.endswith(".pt")), weights_only=True)
    return float((latent["w_plus"] - latent["w_source"]).norm())


@pytest.mark.slow
def test_long_sound_gets_a_video_with_the_sound_and_a_window_long_one_does_not(client, tmp_path):
    import av

    from lightning_modules.animation import frame_count

    long = wav_at_level(tmp_path / "long rain.wav", "rain", 5.0, -30)
    source, edited, status, files, video = edit(client, long, mode="mapper", seed=5)
    assert status.startswith("done") and "video" in status, status
    assert video is not None and video.endswith(".mp4"), video
    assert any(f.endswith(".mp4") for f in files), files
    with av.open(video) as container:
        assert container.streams.audio, "the video has no sound"
        frames = list(container.decode(video=0))
        audio_s = float(container.streams.audio[0].duration * container.streams.audio[0].time_base)
    assert len(frames) == frame_count(5.0, VIDEO_FPS) == 20
    assert frames[0].width == 32 and abs(audio_s - 5.0) < 0.1, (frames[0].width, audio_s)
    encoder = load_audio_encoder(str(TOY / "toy_audio_encoder.pt"))
    window_s = encoder.clip_samples / encoder.sample_rate
    short = wav_at_level(tmp_path / "short rain.wav", "rain", window_s, -30)
    *_, status, files, video = edit(client, short, mode="mapper", seed=5)
    assert status.startswith("done") and video is None and not any(f.endswith(".mp4") for f in files), status


@pytest.mark.slow
def test_loudness_toggle_scales_the_instant_edit_by_the_loudness_map(client, tmp_path):
    """Instant mode ignores lambda_sim, so the toggle must act on strength: a quiet (above the silence floor)
    sound edits less with it on, by the documented map; a sound above full strength's level edits as with it off."""
    from datamodules.loudness import SILENCE_FLOOR_DBFS

    full = yaml.safe_load((REPO / "experiments" / "animate" / "toyworld.yaml").read_text())["settings"]["full_dbfs"]
    quiet_db = (SILENCE_FLOOR_DBFS + full) / 2  # halfway between the floor and full strength
    for name, dbfs, factor in (("quiet", quiet_db, 0.5), ("loud", full + 10, 1.0)):
        sound = wav_at_level(tmp_path / f"{name}.wav", "rain", 1.5, dbfs)
        *_, status_off, off, _ = edit(client, sound, mode="mapper", seed=6, loudness=False)
        *_, status_on, on, _ = edit(client, sound, mode="mapper", seed=6, loudness=True)
        assert status_off.startswith("done") and status_on.startswith("done"), (status_off, status_on)
        ratio = w_distance(on) / w_distance(off)
        assert ratio == pytest.approx(factor, abs=0.02), f"{name} ({dbfs:.0f} dBFS): edit ratio {ratio:.3f}"


@pytest.mark.slow
def test_uploaded_image_is_projected_then_edited(client, app_files, tmp_path):
    from lightning_modules.edit_outputs import to_uint8
    from lightning_modules.networks.checkpoints import load_generator

    G = load_generator(TOY / "toy_stylegan2.pt").eval()
    with torch.no_grad():
        img = to_uint8(G.synthesis(G.mean_latent().reshape(1, 1, -1).repeat(1, G.n_latent, 1)))
    painting = tmp_path / "my painting.png"
    Image.fromarray(img[0].permute(1, 2, 0).numpy()).resize((64, 48)).save(painting)
    source, edited, status, files, _ = edit(client, app_files["fire"], image=str(painting))
    assert status.startswith("done: my painting.png + fire.wav"), status
    assert np.abs(pixels(edited) - pixels(source)).max() > 0
    cached = list((app_files["root"] / "cache" / "projections").glob("my painting-*/w_plus.pt"))
    assert len(cached) == 1, "the projection is cached by image hash"


def bad_inputs(folder: Path) -> list[tuple[str, str, str]]:
    """(input field, file, the reason the page must give) for each kind of bad upload."""
    rng = np.random.RandomState(0)
    noise = (0.1 * rng.randn(16000)).astype(np.float32)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.mp3").write_text("this is a text file, named like a song\n")
    write_wav(folder / "ok.flac", noise)
    data = (folder / "ok.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(data[: len(data) // 3])
    write_wav(folder / "silent.wav", np.zeros(16000))
    write_wav(folder / "click.wav", noise[:1600])
    write_wav(folder / "long.wav", np.tile(noise, 21)[: 21 * 8000], rate=8000)  # 21 s > 20 s
    write_wav(folder / "big.wav", 0.1 * rng.randn(600_000))  # 1.2 MB > 1 MB
    Image.new("RGB", (1200, 1000), "white").save(folder / "huge.png")  # 1.2 megapixels > 1
    Image.new("RGB", (8, 8), "white").save(folder / "tiny.png")
    (folder / "notes.png").write_text("not an image")

    class Boom:  # a pickle that would run a shell command when unpickled
        def __reduce__(self):
            return (os.system, ("touch /tmp/aiartist-app-pwned",))

    with open(folder / "evil.pt", "wb") as f:
        pickle.dump({"w_plus": Boom()}, f)
    torch.save({"w_plus": torch.zeros(3, 7)}, folder / "wrong_shape.pt")
    return [
        ("sound", "empty.wav", "sound empty.wav: the file is empty (0 bytes)"),
        ("sound", "text.mp3", "sound text.mp3: not an audio file"),
        ("sound", "truncated.flac", "sound truncated.flac: truncated or corrupt audio"),
        ("sound", "silent.wav", "sound silent.wav: RMS level -120.0 dBFS is below the silence floor of -60 dBFS"),
        ("sound", "click.wav", "sound click.wav: lasts 0.1 s, shorter than the minimum of 0.25 s"),
        ("sound", "long.wav", "sound long.wav: lasts 21 s, above the limit of 20 s"),
        ("sound", "big.wav", "sound big.wav: 1.1 MB is above the upload limit of 1 MB"),
        ("image", "huge.png", "image huge.png: 1200x1000 = 1.2 megapixels, more than the limit of 1 megapixels"),
        ("image", "tiny.png", "image tiny.png: image is 8x8 px, smaller than the minimum of 32 px"),
        ("image", "notes.png", "image notes.png: not an image file (Pillow cannot read it)"),
        ("wplus", "evil.pt", "W+ file evil.pt: refused to load this"),
        ("wplus", "wrong_shape.pt", "W+ file wrong_shape.pt: code of shape (3, 7)"),
    ]


@pytest.mark.slow
def test_bad_uploads_get_their_own_reason_and_the_server_keeps_serving(client, app_files, tmp_path):
    cases = bad_inputs(tmp_path)
    for field, name, reason in cases:
        path = str(tmp_path / name)
        kwargs = {"sound": app_files["fire"], field: path} if field != "sound" else {"sound": path}
        source, edited, status, files, video = edit(client, **kwargs)
        print(f"api {name}: {status}")
        assert status.startswith(f"⚠ {reason}"), f"{name}: {status}"
        assert "Traceback" not in status and str(tmp_path) not in status and edited is None and files is None
        assert video is None
    assert not Path("/tmp/aiartist-app-pwned").exists(), "the malicious .pt ran code"
    _, edited, status, _, _ = edit(client, app_files["fire"], seed=3)
    assert status.startswith("done"), status


@pytest.mark.slow
def test_server_never_opens_a_path_the_client_names(app_server):
    import httpx

    payload = {"data": [{"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}, None, None, None, None, 1,
                        "optimise", 1.0, STEPS, LAMBDA, "", 0.0, False, "center"]}
    r = httpx.post(f"{app_server['url']}/gradio_api/call/edit", json=payload, timeout=60)
    if r.status_code == 200:
        event = r.json()["event_id"]
        stream = httpx.get(f"{app_server['url']}/gradio_api/call/edit/{event}", timeout=120).text
        assert "event: error" in stream and "done" not in stream, stream[-500:]
    else:
        assert r.status_code >= 400


@pytest.mark.slow
def test_four_clients_at_once_all_get_answers(app_server, app_files):
    results, errors = {}, []

    def visit(k: int) -> None:
        try:
            c = gradio_client.Client(app_server["url"], verbose=False)
            t = time.monotonic()
            out = edit(c, app_files["fire"], seed=10 + k, mode=("optimise", "mapper")[k % 2], strength=0.5 + 0.25 * k)
            results[k] = (time.monotonic() - t, out[2])
        except Exception as err:  # reported below with the others' results
            errors.append(repr(err))

    threads = [threading.Thread(target=visit, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert sorted(results) == [0, 1, 2, 3]
    assert all(status.startswith("done") for _, status in results.values()), results
    assert max(s for s, _ in results.values()) < 240, results


# ---------------------------------------------------------------------------------------------------------------
# In a real browser: the distribution's Chromium driven by Playwright (no browser download).

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium; a skip with the reason where it is missing, a failure under CI=true."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    reason = None
    if path is None:
        reason = "no system Chromium (apt install chromium; `make test` does this when run as root with apt)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI=true: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture
def browser_page(chromium, app_server, tmp_path):
    """A fresh headless Chromium page on the app; yields (page, list of every URL it requested)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, chromium_sandbox=False,
                                    args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(app_server["url"])
        page.wait_for_selector("#edit_btn", timeout=180_000)
        yield page, requests
        browser.close()


def wait_status(page, prefix: tuple[str, ...], timeout_s: float = 180) -> str:
    page.wait_for_function(
        "prefixes => { const t = document.querySelector('#status')?.innerText.trim() || '';"
        " return prefixes.some(p => t.startsWith(p)); }", arg=list(prefix), timeout=timeout_s * 1000)
    return page.locator("#status").inner_text().strip()


def shown_image(page, selector: str) -> np.ndarray:
    """The pixels of the image an <img> shows, fetched from the URL the browser displays."""
    import io

    src = page.locator(f"{selector} img").first.get_attribute("src")
    body = page.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.int16)


@pytest.mark.slow
def test_browser_upload_pick_edit_equals_the_edit_command(browser_page, app_server, app_files, tmp_path,
                                                          single_thread):
    from experiments import edit as edit_cli

    page, requests = browser_page
    page.locator("#sound_file input[type=file]").set_input_files(app_files["fire"])
    page.wait_for_selector("#sound_file :text('fire.wav')", timeout=180_000)
    page.locator("#gallery .thumbnail-item").nth(2).click()  # seed 2 with fire: no other test's cached result
    page.wait_for_function("document.querySelector('#seed input').value === '2'", timeout=180_000)
    sessions = app_server["temp_root"] / "sessions"
    before = set(sessions.iterdir()) if sessions.exists() else set()
    page.evaluate("""() => { window.__frames = new Set();
        new MutationObserver(() => { const i = document.querySelector('#edited img');
            if (i) window.__frames.add(i.src); }).observe(document.body, {subtree: true, childList: true,
            attributes: true, attributeFilter: ['src']}); }""")
    page.locator("#edit_btn").click()
    status = wait_status(page, ("done", "⚠"))
    assert status.startswith("done: seed2 + fire.wav"), status
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    frames = page.evaluate("window.__frames.size")
    assert frames >= 3, f"only {frames} distinct edit images appeared: intermediate frames did not stream"
    shown = shown_image(page, "#edited")
    assert edit_cli.main(["--sound", app_files["fire"], "--seed", "2", "--generator", str(TOY / "toy_stylegan2.pt"),
                          "--audio-encoder", app_files["encoder"], "--clip", str(TOY / "toy_clip.pt"),
                          "--steps", str(STEPS), "--lambda-sim", str(LAMBDA), "--out", str(tmp_path / "cli"),
                          "--device", "cpu"]) == 0
    (png,) = (tmp_path / "cli").glob("*/edits/*.png")
    assert np.array_equal(shown, pixels(str(png))), "the page shows another image than experiments.edit writes"
    print(f"browser edit: {status!r}; {frames} distinct images streamed; shown {shown.shape} == {png.name}")
    (session,) = set(sessions.iterdir()) - before
    assert any(session.glob("*.png")), "results live in the session's folder"
    outside = [u for u in requests if not u.startswith((app_server["url"], "data:", "blob:"))]
    assert outside == [], f"the page fetched from outside the server: {outside[:5]}"
    page.close(run_before_unload=True)
    deadline = time.monotonic() + 30
    while session.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not session.exists(), "the session's folder outlived the session"


@pytest.mark.slow
def test_browser_bad_uploads_show_their_reason(browser_page, app_files, tmp_path):
    page, _ = browser_page
    cases = {name: (field, reason) for field, name, reason in bad_inputs(tmp_path)}
    inputs = {"sound": "#sound_file", "image": "#image_file", "wplus": "#wplus_file"}
    for name in ("text.mp3", "empty.wav", "silent.wav", "truncated.flac", "notes.png", "huge.png", "evil.pt"):
        field, reason = cases[name]
        page.reload()
        page.wait_for_selector("#edit_btn", timeout=180_000)
        with page.expect_response(lambda r: "/upload" in r.url, timeout=180_000) as upload:
            page.locator(f"{inputs[field]} input[type=file]").set_input_files(str(tmp_path / name))
        assert upload.value.ok, f"{name}: upload answered {upload.value.status}"
        page.locator("#edit_btn").click()
        status = wait_status(page, ("⚠", "done"))
        print(f"browser {name}: {status}")
        assert status.startswith(f"⚠ {reason}"), f"{name}: {status}"
    page.reload()
    page.wait_for_selector("#edit_btn", timeout=180_000)
    page.locator("#edit_btn").click()  # the example sound on seed 0: the server still edits
    assert wait_status(page, ("done", "⚠")).startswith("done"), page.locator("#status").inner_text()


@pytest.mark.slow
def test_browser_live_microphone_updates_the_painting(chromium, app_server, tmp_path):
    """A WAV as Chromium's fake microphone: distinct frames are shown in the live image while it streams, and each
    chunk's 3 frames (causal windows ending 1/3, 2/3, 3/3 of the way through it) are shown in turn, a hop apart."""
    from playwright.sync_api import sync_playwright

    wav = tmp_path / "mic.wav"
    sf.write(wav, np.concatenate([synthesize(lbl, 5, seconds=2.0) for lbl in ("rain", "fire crackling", "wind")]),
             16000, subtype="PCM_16")
    flags = CHROMIUM_FLAGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                              f"--use-file-for-fake-audio-capture={wav}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, chromium_sandbox=False, args=flags)
        page = browser.new_page()
        page.goto(app_server["url"])
        page.get_by_role("tab", name="Live").click()
        # a frame is shown when its visibility animation starts (frame j of a chunk: j hops after the chunk came)
        page.evaluate("""() => { window.__live = [];
            document.addEventListener('animationstart', e => { const i = e.target;
                if (i instanceof HTMLImageElement && i.closest('#live_image'))
                    window.__live.push({src: i.src, frame: Number(i.dataset.frame), t: performance.now(),
                                        visible: getComputedStyle(i).visibility}); }, true); }""")
        page.locator("#live_mic").get_by_role("button", name=re.compile("record", re.I)).first.click()
        page.wait_for_function("window.__live.length >= 30", timeout=180_000)
        t0 = page.evaluate("window.__live.length")
        time.sleep(5)
        frames = page.evaluate("window.__live")
        page.screenshot(path=str(tmp_path / "live.png"))
        browser.close()
    recent = frames[t0 - 1:]
    rate = (len(recent) - 1) / ((recent[-1]["t"] - recent[0]["t"]) / 1000)
    print(f"live mode: {len(frames)} frames shown, {rate:.1f} /s over the last {len(recent) - 1}")
    assert len({f["src"] for f in frames}) >= 10
    # every position of the chunk is shown, and a later frame of a chunk after its predecessor by about a hop
    assert {f["frame"] for f in frames} == {0, 1, 2}
    gaps = [b["t"] - a["t"] for a, b in zip(frames, frames[1:]) if b["frame"] == a["frame"] + 1]
    assert gaps and 0.02 <= sorted(gaps)[len(gaps) // 2] / 1000 <= 0.06, gaps  # median ~ 0.1 s / 3


@pytest.mark.slow
def test_browser_cancel_stops_an_edit_and_the_page_edits_again(browser_page):
    page, _ = browser_page
    page.locator("#steps input[type=number]").fill("100")
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#seed input").fill("41")
    page.locator("#seed input").press("Enter")
    page.locator("#edit_btn").click()
    wait_status(page, ("step",))
    page.locator("#cancel_btn").click()
    time.sleep(1)
    frozen = page.locator("#status").inner_text()
    time.sleep(4)  # a running edit changes its status every 2 steps (tens of ms); a cancelled one stays put
    assert page.locator("#status").inner_text() == frozen and not frozen.startswith("done"), frozen
    page.locator("#steps input[type=number]").fill(str(STEPS))
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#edit_btn").click()
    assert wait_status(page, ("done: seed41", "⚠")).startswith("done: seed41")
