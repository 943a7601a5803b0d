"""The page (experiments/app) under a real browser: click-to-image, refine per step, live updates/s and latency,
server memory over many edits. `make bench-app`.

    python benchmarks/bench_app.py [--encoder FILE] [--mapper FILE] [--repeats 5] [--screenshot docs/app.png]

Runs `python -m experiments.app` on the toy world (committed toy StyleGAN2 and toy CLIP; the committed toy audio
encoder and mapper when present, else the files given, else small random ones, and says which) on a free local
port, and the system Chromium headless through Playwright on the same machine. Baselines in the same run: the
engine's own in-process edit (what the page adds on top of it) and optimise per step (what refine adds).
Medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "experiments" / "toyworld" / "weights"
sys.path.insert(0, str(REPO))

from datamodules.soundzoo import synthesize  # noqa: E402

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def models(root: Path, encoder: str | None, mapper: str | None) -> tuple[str, str, str]:
    """(encoder, mapper, description): given files, else the committed toy ones, else small random ones."""
    from lightning_modules.audio_export import export_audio_encoder
    from lightning_modules.networks.audio_encoder import AudioEncoder
    from lightning_modules.networks.mapper import SoundMapper, save_mapper

    notes = []
    encoder = encoder or (str(TOY / "toy_audio_encoder.pt") if (TOY / "toy_audio_encoder.pt").is_file() else None)
    if encoder is None:
        torch.manual_seed(0)
        encoder = str(export_audio_encoder(AudioEncoder(embed_dim=64, backbone="resnet18", width=8, n_mels=32,
                                                        n_fft=256, clip_seconds=1.0).eval(), root / "encoder.pt"))
        notes.append("random tiny encoder (ResNet-18 width 8, 1 s window)")
    else:
        notes.append(f"encoder {encoder}")
    mapper = mapper or (str(TOY / "toy_mapper.pt") if (TOY / "toy_mapper.pt").is_file() else None)
    if mapper is None:
        torch.manual_seed(1)
        mapper = str(save_mapper(SoundMapper(8, 128, 64, conditioning="concat"), root / "mapper.pt"))
        notes.append("random SoundMapper (concat, 4 layers)")
    else:
        notes.append(f"mapper {mapper}")
    return encoder, mapper, "; ".join(notes)


def start_server(config: Path, root: Path, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = root / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.app", "--config", str(config), "--port", str(port),
                             "--threads", str(threads)],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(REPO),
                                           "AIARTIST_CACHE_DIR": str(root / "cache")},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    while "Running on local URL" not in log.read_text():
        if proc.poll() is not None:
            raise SystemExit(f"the page did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def api_edit(client, sound: str, seed: int, mode: str, steps: int) -> tuple[float, str]:
    from gradio_client import handle_file

    t = time.perf_counter()
    out = client.predict(handle_file(sound), None, None, None, None, seed, mode, 1.0, steps, 0.003, "", 0.0, False,
                         "center", api_name="/edit")
    assert out[2].startswith("done"), out[2]
    return time.perf_counter() - t, out[2]


def live_rate(pw, chromium: str, url: str, root: Path, seconds: float) -> tuple[float, float, int]:
    """(updates/s shown in Chromium after the first 5 s, sound-to-picture latency in s, frames) of the live tab
    with a WAV as the fake microphone."""
    # 3 s of silence, then fire. The file starts playing when the recording starts, and the first frame shown
    # answers the first 0.1 s chunk: latency = first frame of sound - (first frame - 0.1 s) - 3 s
    mic = root / "mic.wav"
    fire = synthesize("fire crackling", 3, seconds=seconds + 5)
    sf.write(mic, np.concatenate([np.zeros(48000, np.float32), fire]), 16000, subtype="PCM_16")
    browser = pw.chromium.launch(executable_path=chromium, headless=True, chromium_sandbox=False,
                                 args=FLAGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                               f"--use-file-for-fake-audio-capture={mic}"])
    page = browser.new_page()
    page.goto(url)
    page.get_by_role("tab", name="Live").click()
    # a frame counts when it is shown: its image has loaded (decoded, ready to paint) and its CSS animation
    # (visibility, delayed by j hops within its chunk) has started; it is timed at the later of the two events
    page.evaluate("""() => { window.__live = []; const seen = new Map();
        const mark = (e, kind) => { const i = e.target;
          if (!(i instanceof HTMLImageElement) || !i.closest('#live_image')) return;
          const key = i.src + '#' + (i.parentElement ? i.parentElement.className : '');
          const m = seen.get(key) || {}; if (m.done) return; m[kind] = performance.now(); seen.set(key, m);
          if (m.load !== undefined && m.anim !== undefined) { m.done = true;
            window.__live.push({src: i.src, t: Math.max(m.load, m.anim), status: i.alt || ''}); } };
        document.addEventListener('load', e => mark(e, 'load'), true);
        document.addEventListener('animationstart', e => mark(e, 'anim'), true); }""")
    t_click = page.evaluate("performance.now()")
    page.locator("#live_mic").get_by_role("button", name=re.compile("record", re.I)).first.click()
    time.sleep(seconds)
    frames = page.evaluate("window.__live")
    browser.close()
    levels = [(f["t"], float(m.group(1))) for f in frames if (m := re.search(r"at (-?\d+) dBFS", f["status"]))]
    loud = next((t for t, level in levels if level > -90), None)  # the first chunk that is not digital silence
    window = [f for f in frames if f["t"] - t_click > 5000]
    rate = (len(window) - 1) / ((window[-1]["t"] - window[0]["t"]) / 1000) if len(window) > 1 else 0.0
    latency = (loud - frames[0]["t"]) / 1000 + 0.1 - 3.0 if loud else float("nan")
    return rate, latency, len(frames)


def live_rows(rate: float, latency: float, n_frames: int, seconds: float, per_chunk: int) -> str:
    return (f"| live updates shown in Chromium ({per_chunk} frames per 0.1 s chunk) | {rate:.1f} /s "
            f"({n_frames} frames in {seconds:g} s) |\n"
            f"| live sound-to-picture latency (first frame of sound - first frame - 2.9 s of silence) | "
            f"{latency:.2f} s |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder")
    p.add_argument("--mapper")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--edits", type=int, default=100, help="edits per memory round")
    p.add_argument("--live-seconds", type=float, default=15.0)
    p.add_argument("--live-frames", type=int, default=3, help="live_frames_per_chunk of the page (toyworld.yaml: 3)")
    p.add_argument("--screenshot", help="save a screenshot of the page after an edit here (e.g. docs/app.png)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server and of the baseline")
    p.add_argument("--live-only", action="store_true", help="only the live part (updates/s, latency)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("bench_app: no system Chromium (apt install chromium)")
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from experiments.app.config import load_app_config
    from experiments.app.engine import EditEngine, EditSettings

    root = Path(tempfile.mkdtemp(prefix="bench-app-"))
    try:
        encoder, mapper, about = models(root, args.encoder, args.mapper)
        cfg = dict(generator=str(TOY / "toy_stylegan2.pt"), clip=str(TOY / "toy_clip.pt"), audio_encoder=encoder,
                   mapper=mapper, steps=100, lambda_sim=0.003, gallery_seeds=list(range(8)),
                   example_sounds=["fire crackling", "rain"], live_chunk_seconds=0.1, cache_entries=64,
                   live_frames_per_chunk=args.live_frames)
        (root / "app.yaml").write_text(yaml.safe_dump(cfg))
        fire = root / "fire.wav"
        sf.write(fire, synthesize("fire crackling", 7, seconds=2.0), 16000)
        print(f"bench_app: {about}; load average {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}")
        if args.live_only:
            proc, url = start_server(root / "app.yaml", root, args.threads)
            try:
                with sync_playwright() as pw:
                    rate, latency, n_frames = live_rate(pw, chromium, url, root, args.live_seconds)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            print(f"load average now {os.getloadavg()[0]:.1f}")
            print(live_rows(rate, latency, n_frames, args.live_seconds, args.live_frames))
            return

        engine = EditEngine(load_app_config(root / "app.yaml"))  # baseline: the same edit without the page
        engine.edit(engine.seed_painting(499), fire, EditSettings(mode="mapper", steps=0))  # warm-up
        base = []
        for k in range(args.repeats):
            t = time.perf_counter()
            engine.edit(engine.seed_painting(500 + k), fire, EditSettings(mode="mapper", steps=0))
            base.append(time.perf_counter() - t)
        del engine

        proc, url = start_server(root / "app.yaml", root, args.threads)
        results = {}
        try:
            client = Client(url, verbose=False)
            per_step = {}
            for mode in ("optimise", "refine"):
                diffs = []
                for k in range(args.repeats):
                    t_short, _ = api_edit(client, str(fire), 1000 + 10 * k, mode, 10)
                    t_long, _ = api_edit(client, str(fire), 1001 + 10 * k, mode, 60)
                    diffs.append((t_long - t_short) / 50)
                per_step[mode] = statistics.median(diffs) * 1000
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True, chromium_sandbox=False,
                                             args=FLAGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                page.wait_for_selector("#edit_btn")
                page.locator("#sound_file input[type=file]").set_input_files(str(fire))
                page.wait_for_selector("#sound_file :text('fire.wav')")
                page.get_by_label("Instant (mapper)").check()
                clicks = []
                for k in range(args.repeats):
                    page.locator("#seed input").fill(str(200 + k))
                    page.locator("#seed input").press("Enter")
                    t = time.perf_counter()
                    page.locator("#edit_btn").click()
                    page.wait_for_function(
                        f"(document.querySelector('#status')?.innerText || '').startsWith('done: seed{200 + k}')"
                        " && document.querySelector('#edited img') !== null", polling="raf")
                    clicks.append(time.perf_counter() - t)
                if args.screenshot:
                    page.locator("#gallery .thumbnail-item").nth(3).click()
                    page.get_by_label("Optimise (Eq. 2, frames stream in)").check()
                    page.locator("#edit_btn").click()
                    page.wait_for_function("(document.querySelector('#status')?.innerText || '').startsWith('done')")
                    page.screenshot(path=args.screenshot, full_page=True)
                browser.close()
                results["live"] = live_rate(pw, chromium, url, root, args.live_seconds)
            # memory: warm up, then rounds of distinct edits (the result cache holds 64)
            for k in range(10):
                api_edit(client, str(fire), 3000 + k, "mapper", 0)
            mem = [rss_mb(proc.pid)]
            for r in range(2):
                for k in range(args.edits):
                    api_edit(client, str(fire), 4000 + r * args.edits + k, "mapper", 0)
                mem.append(rss_mb(proc.pid))
            results["memory"] = mem
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        rate, latency, n_frames = results["live"]
        print(f"load average now {os.getloadavg()[0]:.1f}")
        print("| measurement | value |\n|---|---|")
        print(f"| instant (mapper) edit in-process, engine only (baseline) | {statistics.median(base) * 1000:.0f} ms |")
        print(f"| click-to-image, instant edit, in Chromium | {statistics.median(clicks) * 1000:.0f} ms "
              f"(x{statistics.median(clicks) / statistics.median(base):.1f} of the baseline) |")
        print(f"| optimise per step (API, (t60 - t10) / 50) | {per_step['optimise']:.1f} ms |")
        print(f"| refine per step (API) | {per_step['refine']:.1f} ms (x{per_step['refine'] / per_step['optimise']:.2f}"
              f" of optimise) |")
        print(live_rows(rate, latency, n_frames, args.live_seconds, args.live_frames))
        print(f"| server RSS after warm-up / +{args.edits} / +{2 * args.edits} edits | "
              + " / ".join(f"{m:.0f}" for m in results["memory"]) + " MB |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
