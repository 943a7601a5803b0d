"""The Gradio Blocks page: sound in, painting in, controls, and the edit forming as it runs; a live-microphone tab.

Only layout and request plumbing live here: every image comes from `EditEngine`, every upload is read by
`experiments.app.inputs` (the project's own readers), and every bad input becomes one line in the status box.
Results are written to a per-session folder under the server's temporary root, removed when the visitor leaves.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from PIL import Image

from datamodules.audio_windows import causal_windows
from datamodules.soundzoo import synthesize
from experiments.app.config import AppConfig
from experiments.app.engine import (
    DEFAULT_WINDOW,
    WINDOW_POLICIES,
    EditCancelled,
    EditEngine,
    EditSettings,
    ModeUnavailable,
    Painting,
)
from experiments.app.inputs import PageInputError, display_name, read_image, read_sound, read_wplus
from lightning_modules.edit_outputs import save_png, slug

MODE_LABELS = {"optimise": "Optimise (Eq. 2, frames stream in)", "mapper": "Instant (mapper)",
               "refine": "Refine (mapper, then Eq. 2)"}


def page_css(display_size: int) -> str:
    """Small generator outputs shown large with sharp pixels (the served PNG stays the exact edit); the live tab's
    frames of one chunk stacked in one cell, each made visible at its own delay (`live_html`)."""
    return (f"#source img, #edited img, #live_image img {{image-rendering: pixelated; width: {display_size}px "
            f"!important; height: {display_size}px !important; object-fit: contain;}} #status {{min-height: 2em;}} "
            "#live_image .live-frames {display: grid;} #live_image .live-frames img {grid-area: 1 / 1; "
            "visibility: hidden; animation: 0s forwards;} #live_image .chunk0 img {animation-name: live-show0;} "
            "#live_image .chunk1 img {animation-name: live-show1;} @keyframes live-show0 {to {visibility: visible;}} "
            "@keyframes live-show1 {to {visibility: visible;}}")


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def as_numpy(image: torch.Tensor) -> np.ndarray:
    """uint8 (3, H, W) tensor -> (H, W, 3) array for gr.Image (saved losslessly as PNG)."""
    return image.permute(1, 2, 0).contiguous().numpy()


class PageSessions:
    """Per-session folders under one temporary root: created on first use, removed when the session ends."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, request: gr.Request | None) -> Path:
        name = slug(getattr(request, "session_hash", None) or "anonymous")
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove(self, request: gr.Request | None) -> None:
        shutil.rmtree(self.root / slug(getattr(request, "session_hash", None) or "anonymous"), ignore_errors=True)


def in_thread(job: Callable[[Callable[[object], None]], object], box: dict) -> Iterator[object]:
    """Run `job(put)` in a worker thread and yield what it puts while it runs; its result lands in box["result"]
    and its exception is raised here (so the page's generator streams progress and reports errors itself)."""
    items: queue.Queue = queue.Queue()
    finished = object()

    def work() -> None:
        try:
            box["result"] = job(items.put)
        except BaseException as err:  # handed to the page's thread, which reports it
            box["error"] = err
        items.put(finished)

    box.pop("result", None)
    box.pop("error", None)
    threading.Thread(target=work, daemon=True).start()
    while (item := items.get()) is not finished:
        yield item
    if "error" in box:
        raise box.pop("error")


def live_html(frames: torch.Tensor, caption: str, hop_s: float, chunk: int) -> str:
    """A chunk's live frames (K, 3, H, W) uint8 as inline HTML: exact PNG data URLs stacked in one cell, frame j
    shown j * hop_s after the chunk arrives (a CSS animation delay: the browser paces them, no script, no second
    request), with the chunk's caption. Gradio patches the previous HTML in place, so the animation's name
    alternates with the chunk's parity: a changed name restarts the delays."""
    imgs = []
    for j, frame in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(as_numpy(frame)).save(buf, format="png", compress_level=1)
        src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        imgs.append(f'<img src="{src}" alt="{caption}" title="{caption}" data-frame="{j}" '
                    f'style="animation-delay: {j * hop_s:.3f}s">')
    return f'<div class="live-frames chunk{chunk % 2}">{"".join(imgs)}</div><div class="live-caption">{caption}</div>'


def example_sounds(cfg: AppConfig, folder: Path) -> dict[str, str]:
    """label -> wav path: one fresh procedural clip per configured label, plus the files of `examples_dir`."""
    folder.mkdir(parents=True, exist_ok=True)
    sounds = {}
    for k, label in enumerate(cfg.example_sounds):
        path = folder / f"{slug(label)}.wav"
        sf.write(path, synthesize(label, cfg.example_seed + k, seconds=cfg.example_seconds), 16000)
        sounds[label] = str(path)
    if cfg.examples_dir:
        for path in sorted(Path(cfg.resolve(cfg.examples_dir)).iterdir()):
            if path.suffix.lower() in AUDIO_SUFFIXES:
                sounds[f"{path.stem} ({path.parent.name}/)"] = str(path)
    return sounds


def build_page(engine: EditEngine, temp_root: Path) -> gr.Blocks:
    """The page over `engine`; everything it writes lives under `temp_root`."""
    cfg = engine.cfg
    sessions = PageSessions(temp_root / "sessions")
    examples = example_sounds(cfg, temp_root / "examples")
    gallery = [(as_numpy(engine.render(engine.seed_painting(s).w)), f"seed {s}") for s in cfg.gallery_seeds]
    limits = (f"Uploads: at most {cfg.max_upload_mb:g} MB, sounds up to {cfg.max_audio_seconds:g} s, "
              f"images up to {cfg.max_image_megapixels:g} megapixels.")

    def choose_sound(upload: str | None, recording: str | None, example: str | None) -> tuple[str, str]:
        """(path, name) of the sound to use: an upload, else a recording, else an example."""
        if upload:
            return upload, display_name(upload)
        if recording:
            return recording, "microphone recording"
        if example:
            return examples[example], f"example {example!r}"
        raise PageInputError("no sound: upload a file, record one, or pick an example")

    def choose_painting(wplus: str | None, image: str | None, seed: int, progress: gr.Progress) -> Painting:
        if wplus:
            name = display_name(wplus)
            return engine.latent_painting(read_wplus(wplus, engine.generator.n_latent, engine.generator.style_dim,
                                                     cfg.max_upload_mb), name)
        if image:
            read_image(image, engine.generator.size, cfg.max_upload_mb, cfg.max_image_megapixels)
            progress(0, desc="projecting your image into W+ (cached by its hash)")
            return engine.image_painting(image, display_name(image))
        return engine.seed_painting(int(seed))

    def run_edit(upload, recording, example, wplus, image, seed, mode, strength, steps, lambda_sim, text, text_mix,
                 loudness, window, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        """Generator: yields (source, edit, status, downloads, video) as the edit forms; a sound longer than the
        encoder's window then also gets its video (experiments.animate), with its own progress."""
        cancel = threading.Event()
        try:
            sound_path, sound_name = choose_sound(upload, recording, example)
            wave = read_sound(sound_path, engine.encoder.sample_rate, cfg.max_upload_mb, cfg.max_audio_seconds)
            painting = choose_painting(wplus, image, seed, progress)
            settings = EditSettings(mode=mode, strength=float(strength), steps=int(steps), lr=cfg.lr,
                                    lambda_sim=float(lambda_sim), text_prompt=(text or "").strip() or None,
                                    audio_weight=1.0 - float(text_mix) if (text or "").strip() else 1.0,
                                    loudness=bool(loudness), window=window)
            source = as_numpy(engine.render(painting.w))
            yield source, None, f"editing {painting.name} with {sound_name} ({MODE_LABELS[mode]})", None, None
            box: dict = {}
            for step, total, image_t in in_thread(lambda put: engine.edit(
                    painting, sound_path, settings, on_frame=lambda *f: put(f), cancel=cancel), box):
                progress((step, total), desc="Eq. 2")
                yield source, as_numpy(image_t), f"step {step} of {total}", None, None
            outcome = box["result"]
            folder = sessions.folder(request)
            files = write_downloads(outcome, painting, sound_name, folder)
            m = outcome.metrics
            status = (f"{painting.name} + {sound_name}, {MODE_LABELS[mode]}; CLIP cosine to the sound "
                      f"{m['clip_cos_before']:.3f} -> {m['clip_cos_after']:.3f}, |w - w_s| {m['w_dist']:.2f}; "
                      f"sound window: {m['window']}")
            if settings.loudness:
                status += f"; loudness {m['loudness_dbfs']:.1f} dBFS -> strength x {m['loudness_strength']:.2f}"
            seconds = len(wave) / engine.encoder.sample_rate
            if seconds <= engine.window_seconds:
                yield as_numpy(outcome.source), as_numpy(outcome.edited), f"done: {status}", files, None
                return
            yield (as_numpy(outcome.source), as_numpy(outcome.edited),
                   f"edit ready: {status}; rendering the video of the whole {seconds:.1f} s sound", files, None)

            def video_progress(put):
                def report(done: int, total: int) -> None:
                    if cancel.is_set():
                        raise EditCancelled("video cancelled")
                    put((done, total))
                return engine.video(painting, sound_path, settings, folder, report)

            for done, total in in_thread(video_progress, box):
                progress((done, total), desc="video")
            files = [*files, str(box["result"])]
            yield (as_numpy(outcome.source), as_numpy(outcome.edited), f"done: {status}; video of the whole sound "
                   f"({engine.video_mode} mode)", files, str(box["result"]))
        except (PageInputError, ModeUnavailable, ValueError, FileNotFoundError) as err:
            yield None, None, f"⚠ {err}", None, None
        except EditCancelled:
            yield gr.skip(), gr.skip(), "cancelled", gr.skip(), None
        finally:
            cancel.set()  # a cancelled or abandoned generator stops the optimisation at its next step

    def write_downloads(outcome, painting: Painting, sound_name: str, folder: Path) -> list[str]:
        stem = f"{slug(painting.name)}_{slug(sound_name)}_{outcome.metrics['mode']}"
        n = len(list(folder.glob(f"{stem}*.png")))
        stem = f"{stem}_{n}" if n else stem
        png = save_png(outcome.edited, folder / f"{stem}.png")
        latent = folder / f"{stem}.pt"
        torch.save({"w_plus": outcome.w.clone(), "w_source": outcome.w_source.clone(), "source": painting.name,
                    "sound": sound_name}, latent)
        metrics = folder / f"{stem}.json"
        metrics.write_text(json.dumps({**outcome.metrics, "sound": sound_name}, indent=2))
        return [str(png), str(latent), str(metrics)]

    # ------------------------------------------------------------------------------------------ live mode
    window_samples = engine.encoder.clip_samples

    def live_update(chunk, state, seed, strength):
        """One microphone chunk -> `live_frames_per_chunk` frames: frame j of k sees the causal window ending j/k of
        the way through the chunk and is shown (j - 1)/k of a chunk after it arrives, so the painting moves k times
        per chunk (Gradio's microphone sends at most 10 chunks/s). All k go back in one inline HTML message.
        `state`: (the last window of sound, chunks so far) of this visitor."""
        if chunk is None:
            return gr.skip(), state, gr.skip()
        buffer, count = state or (None, 0)
        rate, data = chunk
        data = np.asarray(data)
        wave = torch.from_numpy(data.astype(np.float32) / (32768.0 if data.dtype == np.int16 else 1.0))
        if wave.ndim == 2:
            wave = wave.mean(dim=1)
        if rate != engine.encoder.sample_rate:
            wave = AF.resample(wave, int(rate), int(engine.encoder.sample_rate))
        n = wave.numel()
        k = max(1, min(cfg.live_frames_per_chunk, n))
        windows, buffer = causal_windows(buffer, wave, window_samples, k)
        state = (buffer, count + 1)
        try:
            frames = engine.live_frames(live_source(int(seed)), windows, float(strength))
        except ModeUnavailable as err:
            return gr.skip(), state, f"⚠ {err}"
        level = 20 * np.log10(max(float(wave.pow(2).mean().sqrt()) if n else 0.0, 1e-6))
        caption = f"{n / engine.encoder.sample_rate:.2f} s chunk at {level:.0f} dBFS"
        return live_html(frames, caption, n / k / engine.encoder.sample_rate, count), state, gr.skip()

    @functools.lru_cache(maxsize=64)
    def live_source(seed: int) -> torch.Tensor:
        """The W+ code of a gallery seed (mapped once, not per chunk)."""
        return engine.seed_painting(seed).w

    # ------------------------------------------------------------------------------------------ layout
    with gr.Blocks(title="aiartist: sound-guided painting edits", analytics_enabled=False,
                   delete_cache=(600, 3600)) as page:
        gr.Markdown("## Play a sound, watch the painting answer\nThe painting's W+ code moves towards the sound's "
                    "embedding in CLIP space (paper Eq. 2). " + limits)
        if cfg.generator_licence:
            gr.Markdown(f"**Licence of the generator's weights:** {cfg.generator_licence}", elem_id="licence")
        with gr.Tab("Edit"):
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### Sound")
                    upload = gr.File(label="Upload a sound (wav, flac, ogg, mp3)", type="filepath",
                                     elem_id="sound_file")
                    recording = gr.Audio(sources=["microphone"], type="filepath", label="...or record one",
                                         elem_id="recording")
                    example = gr.Dropdown(list(examples), value=next(iter(examples), None),
                                          label="...or an example sound", elem_id="example")
                    window = gr.Dropdown(list(WINDOW_POLICIES), value=DEFAULT_WINDOW,
                                         label="Part of a long clip used", elem_id="window")
                with gr.Column():
                    gr.Markdown("### Painting")
                    samples = gr.Gallery(gallery, label="Generator samples (click one)", columns=4, height=220,
                                         allow_preview=False, elem_id="gallery")
                    seed = gr.Number(value=cfg.gallery_seeds[0] if cfg.gallery_seeds else 0, precision=0,
                                     label="Sample seed (click a sample, or type any seed)", elem_id="seed")
                    image = gr.File(label="...or your own image (projected into W+, cached)", type="filepath",
                                    elem_id="image_file")
                    wplus = gr.File(label="...or a W+ file (.pt/.npy)", type="filepath", elem_id="wplus_file")
                with gr.Column():
                    gr.Markdown("### Controls")
                    mode = gr.Radio([(MODE_LABELS[m], m) for m in engine.modes], value="optimise", label="Mode",
                                    elem_id="mode")
                    strength = gr.Slider(-2.0, 2.0, value=1.0, step=0.05, label="Strength (negative: away)",
                                         elem_id="strength")
                    steps = gr.Slider(0, cfg.max_steps, value=cfg.steps, step=1, label="Steps (optimise, refine)",
                                      elem_id="steps")
                    lambda_sim = gr.Number(value=cfg.lambda_sim, label="λ_sim (closeness to the source)",
                                           minimum=0, elem_id="lambda_sim")
                    text = gr.Textbox(label="Optional text prompt", elem_id="text")
                    text_mix = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Text weight", elem_id="text_mix")
                    loudness = gr.Checkbox(label="Louder sound, stronger edit (strength x 0 at the silence floor "
                                           f"... 1 at {engine.animation.full_dbfs:g} dBFS, every mode)",
                                           elem_id="loudness")
                    with gr.Row():
                        edit_btn = gr.Button("Edit", variant="primary", elem_id="edit_btn")
                        cancel_btn = gr.Button("Cancel", elem_id="cancel_btn")
            status = gr.Markdown("", elem_id="status")
            with gr.Row():
                source_out = gr.Image(label="Source", format="png", elem_id="source", interactive=False,
                                      height=cfg.display_size + 60)
                edited_out = gr.Image(label="Edit", format="png", elem_id="edited", interactive=False,
                                      height=cfg.display_size + 60)
            video_out = gr.Video(label="The painting following the whole sound (sounds longer than "
                                 f"{engine.window_seconds:g} s)", elem_id="video", interactive=False,
                                 height=cfg.display_size + 60)
            downloads = gr.File(label="Downloads: PNG, W+ .pt, metrics JSON, MP4", file_count="multiple",
                                elem_id="downloads", interactive=False)
        with gr.Tab("Live"):
            gr.Markdown("Speak, play music or make noise: each chunk of ≤ 0.5 s moves the painting through the "
                        "mapper. Browsers allow the microphone only on localhost or HTTPS.")
            live_buffer = gr.State(None)
            with gr.Row():
                live_mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                                    elem_id="live_mic")
                live_image = gr.HTML("", label="Live painting", elem_id="live_image", min_height=cfg.display_size)
            live_status = gr.Markdown("", elem_id="live_status")

        def pick(evt: gr.SelectData) -> int:
            return cfg.gallery_seeds[evt.index]

        samples.select(pick, None, seed, api_name=False)
        event = edit_btn.click(
            run_edit, [upload, recording, example, wplus, image, seed, mode, strength, steps, lambda_sim, text,
                       text_mix, loudness, window], [source_out, edited_out, status, downloads, video_out],
            api_name="edit", concurrency_limit=cfg.concurrency_limit, concurrency_id="edits")
        cancel_btn.click(None, None, None, cancels=[event], api_name=False)
        live_mic.stream(live_update, [live_mic, live_buffer, seed, strength], [live_image, live_buffer, live_status],
                        stream_every=cfg.live_chunk_seconds, time_limit=600, api_name=False,
                        concurrency_limit=cfg.concurrency_limit, show_progress="hidden")
        def end_session(request: gr.Request) -> None:
            sessions.remove(request)

        page.unload(end_session)
    return page
