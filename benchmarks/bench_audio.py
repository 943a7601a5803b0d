"""Audio data path speed: our loader + log-mel vs the official librosa pipeline, and DataModule setup at scale.

    make bench-audio            (or: python benchmarks/bench_audio.py [--clips 24] [--rows 200000])

Part 1, per 10 s clip, one thread (torch, BLAS and OpenMP), median of repeated passes over the same files (page
cache warm); the cases take turns within every repeat, so the load of a shared machine affects all alike:
- official: `librosa.load(path, sr=44100)` + `melspectrogram(n_fft=2048, hop=512, n_mels=128)` +
  `power_to_db(ref=max) / 80 + 1`, all inside the dataset (so inside the DataLoader workers); run on our
  prepared 16 kHz FLAC (librosa resamples up to 44.1 kHz) and on 44.1 kHz FLAC (no resampling, its best case),
  with today's librosa resampler (soxr) and with librosa 0.8.1's default (resampy kaiser_best, the official env).
- ours: soundfile decode + crop in the DataLoader workers (CPU); `LogMelFrontEnd` on the model's device (here
  the CPU, per clip and batched 32 at a time; on a GPU it is a few microseconds per clip).
- same rate: librosa at 16 kHz with our front-end parameters (n_fft 1024, hop 160, 128 HTK mels) vs ours, so
  the speedup is not only the lower sample rate.
Part 2: `VGGSoundDataModule.setup()` on a synthetic CSV of `--rows` rows (309 labels, 15 % without a file)
with empty files, vs the naive lookup (one `os.path.exists` per row and candidate extension). The files go to
tmpfs by default, so this measures the CPU and syscall cost with a warm metadata cache; on a network
filesystem every `stat` is a round trip and the naive lookup is far slower still.
"""

from __future__ import annotations

import os

# One thread on both sides: numpy's BLAS (librosa's mel product) and OpenMP read these at import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from _common import interleaved_medians, machine_header  # noqa: E402

from datamodules.audio_io import crop_or_pad, load_audio  # noqa: E402
from datamodules.frontend import LogMelFrontEnd  # noqa: E402
from datamodules.soundzoo import SOUND_CLASSES, synthesize  # noqa: E402
from datamodules.vggsound import AUDIO_EXTENSIONS, VGGSoundDataModule, index_audio_files  # noqa: E402
from datamodules.vggsound_csv import read_vggsound_csv  # noqa: E402

OFFICIAL = "official, 16 kHz FLAC -> 44.1 kHz (soxr_hq)"
OFFICIAL_081 = "official, 16 kHz FLAC -> 44.1 kHz (resampy kaiser_best, librosa 0.8.1 default)"
SAME_RATE = "librosa at 16 kHz with our parameters (same rate)"
LOADER = "ours: decode 16 kHz FLAC + crop"
MEL = "ours: LogMelFrontEnd, one clip"
END_TO_END = "ours end to end: decode + crop + LogMelFrontEnd, one clip"


Case = tuple[str, str, Callable, list]  # name, where it runs, function of one item, items


def _interleaved_ms_per_clip(cases: list[Case], repeats: int) -> list[tuple[str, str, float]]:
    """Median wall ms per item of each case, the cases taking turns in every repeat (`interleaved_medians`)."""
    for _, _, fn, items in cases:
        fn(items[0])  # warm-up: lazy imports, numba JIT (resampy), FFT plans
    passes = {k: (lambda fn=fn, items=items: [fn(it) for it in items]) for k, (_, _, fn, items) in enumerate(cases)}
    med = interleaved_medians(passes, repeats, warmup=0)
    return [(name, where, 1000 * med[k][0] / len(items)) for k, (name, where, _, items) in enumerate(cases)]


def audio_path(n_clips: int, repeats: int, device: str) -> list[tuple[str, str, float]]:
    import librosa

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_audio_"))
    f16, f44 = [], []
    for i in range(n_clips):
        x = synthesize(SOUND_CLASSES[i % len(SOUND_CLASSES)], i, 16000, 10.0)
        sf.write(tmp / f"c{i}_16k.flac", x, 16000, subtype="PCM_16")
        sf.write(tmp / f"c{i}_44k.flac", librosa.resample(x, orig_sr=16000, target_sr=44100), 44100, subtype="PCM_16")
        f16.append(tmp / f"c{i}_16k.flac")
        f44.append(tmp / f"c{i}_44k.flac")

    def official(path, res_type="soxr_hq"):
        y, sr = librosa.load(path, sr=44100, res_type=res_type)
        spec = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
        return librosa.power_to_db(spec, ref=np.max) / 80.0 + 1.0

    def official_same_rate(path):
        y, sr = librosa.load(path, sr=16000)
        spec = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=160, n_mels=128, htk=True, norm=None)
        return librosa.power_to_db(spec, ref=np.max) / 80.0 + 1.0

    gen = torch.Generator().manual_seed(0)
    fe = LogMelFrontEnd()

    def ours_loader(path):
        return crop_or_pad(load_audio(path, 16000), 160000, "random", gen)

    def ours_end_to_end(path):
        return fe(ours_loader(path)[None])

    waves = [ours_loader(p) for p in f16]
    batch = torch.stack((waves * 32)[:32])
    worker, model_cpu = "loader worker", "model device (CPU here)"
    cases = [
        (OFFICIAL, worker, official, f16),
        ("official, 44.1 kHz FLAC (no resampling)", worker, official, f44),
        (OFFICIAL_081, worker, lambda p: official(p, "kaiser_best"), f16[: max(2, len(f16) // 4)]),
        (SAME_RATE, worker, official_same_rate, f16),
        (LOADER, worker, ours_loader, f16),
        (MEL, model_cpu, lambda w: fe(w[None]), waves),
        ("ours: LogMelFrontEnd, batch of 32 (per clip)", model_cpu, fe, [batch] * 2),
        (END_TO_END, "both, on one CPU thread", ours_end_to_end, f16),
    ]
    if device.startswith("cuda") and torch.cuda.is_available():
        fe_gpu, gb = LogMelFrontEnd().to(device), batch.to(device)

        def gpu(b):
            fe_gpu(b)
            torch.cuda.synchronize()

        cases.append((f"ours: LogMelFrontEnd, batch of 32 on {torch.cuda.get_device_name()} (per clip)",
                      "model device (GPU)", gpu, [gb] * 20))
    with torch.no_grad():
        rows = _interleaved_ms_per_clip(cases, repeats)
    rows = [(name, where, ms / 32 if "batch of 32" in name else ms) for name, where, ms in rows]
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return rows


def setup_scale(n_rows: int, repeats: int, where: str | None) -> list[tuple[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_setup_", dir=where))
    root = tmp / "root"
    root.mkdir()
    rng = np.random.default_rng(0)
    labels = [f"class {i:03d}" if i % 7 else f"class {i:03d}, with a comma" for i in range(309)]
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    ids = ["".join(row) for row in alphabet[rng.integers(0, 64, (n_rows, 11))]]
    with open(tmp / "vggsound.csv", "w", newline="") as f:
        writer = csv.writer(f)
        for i, youtube_id in enumerate(ids):
            writer.writerow([youtube_id, 10 * (i % 30), labels[i % 309], "test" if i % 13 == 0 else "train"])
    t0 = time.perf_counter()
    for i, youtube_id in enumerate(ids):
        if rng.random() >= 0.15:  # 15 % dead links
            open(root / f"{youtube_id}_{10 * (i % 30):06d}.flac", "wb").close()
    made = time.perf_counter() - t0

    def ours():
        dm = VGGSoundDataModule(str(root), csv_path=str(tmp / "vggsound.csv"), num_workers=0, report_dir=str(tmp))
        dm.setup("fit")
        return dm

    def naive():
        found = {}
        for r in read_vggsound_csv(tmp / "vggsound.csv"):
            for ext in AUDIO_EXTENSIONS:
                path = os.path.join(root, f"{r.key}{ext}")
                if os.path.exists(path):
                    found[r.key] = path
                    break
        return found

    def scan():
        index = index_audio_files(root)
        return {r.key: index[r.key] for r in read_vggsound_csv(tmp / "vggsound.csv") if r.key in index}

    def timed(fn):  # median wall s of `repeats` calls in a row (the cases are too slow to take turns)
        return interleaved_medians({"case": fn}, repeats, warmup=0)["case"][0]

    assert scan() == naive()
    rows = [("creating the empty files (not part of setup)", made),
            ("parse the CSV alone", timed(lambda: read_vggsound_csv(tmp / "vggsound.csv"))),
            ("lookup, ours: CSV + one directory scan", timed(scan)),
            ("lookup, naive: CSV + one os.path.exists per row and candidate extension", timed(naive)),
            ("VGGSoundDataModule.setup() (CSV, scan, stratified split, missing-file report)", timed(ours))]
    n_present = len(ours().train_set.clips)
    for p in root.iterdir():
        p.unlink()
    root.rmdir()
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    print(f"(setup found {n_present} train clips of {n_rows} rows)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24, help="10 s clips per timing pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=200_000, help="CSV rows (and files) for the setup timing")
    parser.add_argument("--setup-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="folder for the empty files (default tmpfs: creating 200k on a slow disk takes minutes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    logging.getLogger("datamodules.vggsound").setLevel(logging.ERROR)  # the missing-file report, once per setup

    torch.set_num_threads(1)
    print(machine_header(args.device))
    print("OMP/OPENBLAS/MKL threads "
          f"{os.environ['OMP_NUM_THREADS']}/{os.environ['OPENBLAS_NUM_THREADS']}/{os.environ['MKL_NUM_THREADS']}")
    rows = audio_path(args.clips, args.repeats, args.device)
    ms = {name: v for name, _, v in rows}
    print("\n| path (10 s clip, 1 thread) | runs in | ms/clip | clips/s |\n|---|---|---:|---:|")
    for name, where, v in rows:
        print(f"| {name} | {where} | {v:.2f} | {1000 / v:.0f} |")
    print("\n| comparison (same run) | speedup |\n|---|---:|")
    print(f"| loader work per clip: official vs ours (decode + crop; mel on the model device) "
          f"| {ms[OFFICIAL] / ms[LOADER]:.1f}x |")
    print(f"| loader work per clip: official as released (librosa 0.8.1's kaiser_best) vs ours "
          f"| {ms[OFFICIAL_081] / ms[LOADER]:.1f}x |")
    print(f"| end to end on one CPU thread: official vs ours | {ms[OFFICIAL] / ms[END_TO_END]:.1f}x |")
    print(f"| same rate (16 kHz, same STFT/mel sizes): librosa vs ours end to end "
          f"| {ms[SAME_RATE] / ms[END_TO_END]:.1f}x |")
    print(f"| official with librosa 0.8.1's resampler vs ours end to end | {ms[OFFICIAL_081] / ms[END_TO_END]:.1f}x |")
    print(f"\n| DataModule setup, {args.rows:,} rows | seconds |\n|---|---:|")
    print(f"(files in {args.setup_dir or tempfile.gettempdir()})")
    for name, seconds in setup_scale(args.rows, 3, args.setup_dir):
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
