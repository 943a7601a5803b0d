"""`make app` / `python -m experiments.app [--config experiments/app/toyworld.yaml] [--host 127.0.0.1] [--port 7860]`.

Loads the configured models once and serves the page on localhost (public only with --share or another --host).
Missing weight files are listed, with where each is expected, before anything loads. Everything the server writes
(uploads, results, examples) lives in one temporary folder, removed when the server stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from experiments.app.config import DEFAULT_CONFIG, AppConfigError, load_app_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.app", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="page config YAML (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 makes the page public")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return p


def theme():
    """Gradio's default look with system fonts only: the page fetches nothing from the internet."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "monospace"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_app_config(args.config)
    except AppConfigError as err:
        print(f"python -m experiments.app: {err}", file=sys.stderr)
        return 2
    missing = cfg.missing_files()
    if missing:
        print(f"python -m experiments.app: {args.config}: missing file(s) (fetch real weights with "
              f"`{cfg.missing_hint}`):\n" + "\n".join(f"  {name}: expected at {path}" for name, path in missing),
              file=sys.stderr)
        return 1
    temp_root = Path(tempfile.mkdtemp(prefix="aiartist-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(temp_root / "gradio")  # uploads land here; read before gradio imports
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the clean-up below on `kill`
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        from experiments.app.engine import EditEngine
        from experiments.app.page import build_page, page_css

        engine = EditEngine(cfg, device=args.device)
        page = build_page(engine, temp_root)
        page.queue(default_concurrency_limit=cfg.concurrency_limit)
        print(f"models loaded (modes: {', '.join(engine.modes)}); temporary files in {temp_root}", flush=True)
        page.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False,
                    max_file_size=int(2 * cfg.max_upload_mb * 1e6), allowed_paths=[str(temp_root)],
                    theme=theme(), css=page_css(cfg.display_size), footer_links=[], show_error=False)
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
