"""An embedded, procedural sound set in the VGGSound layout, for offline demos and tests.

Ten classes: the paper's seven (fire crackling, rain, wind, explosion, thunderstorm, folk music, Latin
music) and three more (dog barking, church bells, birds chirping). Every clip is generated from a seed
with numpy only (deterministic: same seed, same samples) and draws its own pitch, tempo, event density,
timing and loudness, so a model must learn the class, not memorise a clip. Each class keeps a recognisable
spectro-temporal signature (e.g. sparse broadband clicks for fire, dense bright hiss for rain, slowly
swelling low-mid noise for wind, plucked major-key arpeggios for folk), which makes the set learnable by
a small encoder in minutes on a CPU.

Defaults: 16 kHz, 3 s clips (short, so `make demo` trains quickly; generation of a 200-clip set takes
a few seconds). `python -m datamodules.soundzoo OUT --clips-per-class N` writes `OUT/vggsound.csv` and
`OUT/{youtube_id}_{start:06d}.flac`, loadable unchanged by `VGGSoundDataModule(OUT, clip_seconds=3)`.
The first clip of every class gets an id starting with "-", as many real YouTube ids do.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

SOUND_CLASSES = [
    "fire crackling",
    "rain",
    "wind",
    "explosion",
    "thunderstorm",
    "folk music",
    "latin music",
    "dog barking",
    "church bells",
    "birds chirping",
]
DEFAULT_SECONDS = 3.0
MANIFEST = "soundzoo.json"

Rng = np.random.Generator


# ---------------------------------------------------------------------------- signal helpers


def _spectral(x: np.ndarray, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Zero-phase filtering by a magnitude response gain(f) applied in the frequency domain."""
    freqs = np.fft.rfftfreq(len(x), 1.0 / sr)
    return np.fft.irfft(np.fft.rfft(x) * gain(np.maximum(freqs, 1e-3)), n=len(x))


def _lowpass(x: np.ndarray, sr: int, fc: float) -> np.ndarray:
    return _spectral(x, sr, lambda f: 1.0 / np.sqrt(1.0 + (f / fc) ** 4))


def _highpass(x: np.ndarray, sr: int, fc: float) -> np.ndarray:
    return _spectral(x, sr, lambda f: 1.0 / np.sqrt(1.0 + (fc / f) ** 4))


def _bandpass(x: np.ndarray, sr: int, fc: float, octaves: float) -> np.ndarray:
    """Gaussian band on a log-frequency axis, `octaves` wide (standard deviation)."""
    return _spectral(x, sr, lambda f: np.exp(-0.5 * (np.log2(f / fc) / octaves) ** 2))


def _smooth(rng: Rng, n: int, sr: int, rate_hz: float) -> np.ndarray:
    """A slowly varying random curve in [-1, 1]: `rate_hz` random knots per second, raised-cosine interpolated."""
    points = max(2, int(n / sr * rate_hz) + 2)
    knots = rng.uniform(-1.0, 1.0, points)
    pos = np.linspace(0, points - 1, n)
    idx = np.minimum(pos.astype(int), points - 2)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - idx))
    return knots[idx] * (1 - w) + knots[idx + 1] * w


def _add(out: np.ndarray, sig: np.ndarray, start: int) -> None:
    """Mix `sig` into `out` starting at sample `start`, cutting what falls outside."""
    if start >= len(out) or start + len(sig) <= 0:
        return
    s0, k0 = max(start, 0), max(-start, 0)
    k1 = min(len(sig), len(out) - start)
    out[s0 : start + k1] += sig[k0:k1]


def _decay(sr: int, seconds: float, tau: float) -> np.ndarray:
    return np.exp(-np.arange(int(seconds * sr)) / (tau * sr))


def _tone(sr: int, seconds: float, freq: np.ndarray | float, phase: float = 0.0) -> np.ndarray:
    """A sine whose frequency may vary per sample (phase-continuous)."""
    n = int(seconds * sr)
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    return np.sin(phase + 2 * np.pi * np.cumsum(f) / sr)


def _pluck(rng: Rng, sr: int, f0: float, seconds: float, t60: float, brightness: float) -> np.ndarray:
    """Karplus-Strong plucked string: a noise burst recirculated through a delay line with averaging loss."""
    period = max(2, int(round(sr / f0)))
    n = int(seconds * sr)
    burst = rng.uniform(-1.0, 1.0, period)
    # a darker pluck: pre-smooth the excitation
    burst = brightness * burst + (1 - brightness) * np.convolve(burst, np.ones(4) / 4, mode="same")
    loss = 10.0 ** (-3.0 / (t60 * f0))  # per-period gain for a 60 dB decay in t60 seconds
    y = np.zeros(n + period + 1)
    y[1 : period + 1] = burst
    # y[j] = loss/2 (y[j-P] + y[j-P-1]): every block of P samples only reads the previous block.
    for j0 in range(period + 1, len(y), period):
        j1 = min(j0 + period, len(y))
        y[j0:j1] = 0.5 * loss * (y[j0 - period : j1 - period] + y[j0 - period - 1 : j1 - period - 1])
    return y[1 : n + 1]


def _brass(sr: int, f0: float, seconds: float, brightness: float, vibrato: float) -> np.ndarray:
    """Brass-like tone: sawtooth-like harmonic stack with a swelling attack and a little vibrato."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    freq = f0 * (1 + vibrato * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(freq) / sr
    harmonics = max(1, min(12, int((sr / 2) / f0) - 1))
    tone = sum(np.sin(k * phase) * brightness ** (k - 1) / k for k in range(1, harmonics + 1))
    attack = np.minimum(1.0, t / 0.03)
    release = np.minimum(1.0, (seconds - t) / 0.04).clip(min=0)
    return tone * attack * release


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


# ---------------------------------------------------------------------------- the classes


def _fire(rng: Rng, n: int, sr: int) -> np.ndarray:
    seconds = n / sr
    bed = _lowpass(rng.standard_normal(n), sr, rng.uniform(120, 350)) * rng.uniform(0.05, 0.15)
    bed *= 1 + 0.5 * _smooth(rng, n, sr, 1.5)
    crackle = np.zeros(n)
    rate = rng.uniform(6, 30)  # crackles per second
    for _ in range(rng.poisson(rate * seconds)):
        length = int(rng.uniform(0.4, 5.0) * 1e-3 * sr) + 2
        click = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
        if rng.random() < 0.3:  # a resonant pop
            click *= np.sin(2 * np.pi * rng.uniform(700, 3000) * np.arange(length) / sr) * 2
        _add(crackle, click * min(rng.pareto(2.5) + 0.2, 4.0), int(rng.integers(n)))
    return bed + _highpass(crackle, sr, rng.uniform(300, 900))


def _rain_layer(rng: Rng, n: int, sr: int, density: float) -> np.ndarray:
    hiss = _highpass(rng.standard_normal(n), sr, rng.uniform(1000, 3000)) * rng.uniform(0.15, 0.3)
    hiss *= 1 + 0.15 * _smooth(rng, n, sr, 0.7)
    drops = np.zeros(n)
    count = rng.poisson(density * n / sr)
    drops[rng.integers(0, n, count)] += rng.exponential(1.0, count)
    kernel = rng.standard_normal(int(sr * rng.uniform(0.3, 1.2) * 1e-3) + 2)
    drops = np.convolve(drops, kernel * np.exp(-np.arange(len(kernel)) / (len(kernel) / 3)), mode="same")
    for _ in range(rng.poisson(rng.uniform(4, 15) * n / sr)):  # a few larger, ringing drops
        _add(drops, 2 * _tone(sr, 0.015, rng.uniform(2000, 5000)) * _decay(sr, 0.015, 0.003), int(rng.integers(n)))
    return hiss + 0.3 * _highpass(drops, sr, rng.uniform(1500, 3000))


def _rain(rng: Rng, n: int, sr: int) -> np.ndarray:
    return _rain_layer(rng, n, sr, density=rng.uniform(300, 1500))


def _wind(rng: Rng, n: int, sr: int) -> np.ndarray:
    fc = rng.uniform(150, 700)
    out = np.zeros(n)
    for ratio in (0.6, 1.0, 1.6):  # neighbouring bands swell in turn: a wandering resonance
        band = _bandpass(rng.standard_normal(n), sr, fc * ratio, rng.uniform(0.15, 0.35))
        out += band * (0.6 + 0.4 * _smooth(rng, n, sr, rng.uniform(0.5, 1.5)))
    gust = 0.6 + 0.4 * _smooth(rng, n, sr, rng.uniform(0.4, 1.2))  # gusts: 0.2 .. 1.0
    return out * gust


def _boom(rng: Rng, sr: int, seconds: float, fc: float, tau: float) -> np.ndarray:
    n = int(seconds * sr)
    env = _decay(sr, seconds, tau) * np.minimum(1.0, np.arange(n) / (0.004 * sr))
    low = _lowpass(rng.standard_normal(n), sr, fc) * 3
    sweep = _tone(sr, seconds, np.linspace(rng.uniform(60, 90), rng.uniform(30, 45), n))
    return (low + 0.8 * sweep) * env


def _explosion(rng: Rng, n: int, sr: int) -> np.ndarray:
    seconds = n / sr
    out = _lowpass(rng.standard_normal(n), sr, 400) * 0.01
    onset = int(rng.uniform(0.05, 0.35) * n)
    crack_len = rng.uniform(0.01, 0.03)
    crack = rng.standard_normal(int(crack_len * sr)) * _decay(sr, crack_len, crack_len / 3) * rng.uniform(1.5, 3)
    _add(out, crack, onset)
    _add(out, _boom(rng, sr, seconds, rng.uniform(60, 200), rng.uniform(0.3, 1.0)), onset)
    for _ in range(rng.poisson(6)):  # debris
        length = int(0.003 * sr)
        debris = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4)) * rng.uniform(0.1, 0.5)
        _add(out, debris, onset + int(rng.uniform(0.05, 1.0) * sr))
    return out


def _thunderstorm(rng: Rng, n: int, sr: int) -> np.ndarray:
    out = _rain_layer(rng, n, sr, density=rng.uniform(400, 1200)) * rng.uniform(0.3, 0.6)
    for _ in range(int(rng.integers(1, 3))):
        length = rng.uniform(1.5, 2.8)
        m = int(length * sr)
        t = np.arange(m) / sr
        attack = rng.uniform(0.1, 0.4)
        env = np.minimum(1.0, t / attack) * np.exp(-np.maximum(t - attack, 0) / rng.uniform(0.5, 1.2))
        rolling = 0.6 + 0.4 * _smooth(rng, m, sr, rng.uniform(3, 8))  # the rumble rolls in and out
        rumble = _lowpass(rng.standard_normal(m), sr, rng.uniform(50, 150)) * 4
        _add(out, rumble * env * rolling, int(rng.uniform(0.0, 0.5) * n))
    return out


MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])


def _folk(rng: Rng, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    tonic = int(rng.integers(40, 53))  # E2 .. E3
    beat = 60.0 / rng.uniform(80, 120)
    eighth = beat / 2
    progression = [[0, 3, 4, 0], [0, 4, 5, 3], [0, 3, 0, 4]][int(rng.integers(3))]  # I-IV-V-I, I-V-vi-IV, ...
    pattern = [[0, 2, 1, 2], [0, 1, 2, 1], [0, 2, 4, 2], [0, 1, 2, 4]][int(rng.integers(4))]
    t = rng.uniform(0.0, 0.15)
    step = 0
    brightness, t60 = rng.uniform(0.5, 1.0), rng.uniform(0.8, 2.0)
    while t < n / sr:
        degree = progression[(step // 8) % len(progression)]  # one chord per bar of 8 eighths
        chord = [MAJOR[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4, 7)]
        if step % 8 == 0:  # bass note on the downbeat
            _add(out, _pluck(rng, sr, _midi_hz(tonic + chord[0] - 12), 1.5, t60, brightness), int(t * sr))
        note = tonic + 12 + chord[pattern[step % 4] % len(chord)] + (12 if pattern[step % 4] == 4 else 0)
        level = rng.uniform(0.5, 1.0) * (1.0 if step % 2 == 0 else 0.7)  # downbeats a little stronger
        _add(out, level * _pluck(rng, sr, _midi_hz(note), 1.0, t60, brightness), int((t + rng.normal(0, 0.005)) * sr))
        t += eighth
        step += 1
    return out


SON_CLAVE_32 = (0, 6, 12, 20, 24)  # 3-2 son clave over two bars of sixteenths
CONGA_16 = (3, 6, 7, 10, 14, 15)  # open tones of a tumbao-like pattern
BRASS_16 = (2, 6, 10, 11)  # syncopated brass stabs


def _latin(rng: Rng, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    sixteenth = 60.0 / rng.uniform(95, 130) / 4
    root = int(rng.integers(55, 65))
    chord = np.array([0, 4, 7]) if rng.random() < 0.5 else np.array([0, 3, 7])
    clave_f, conga_f = rng.uniform(1800, 2800), rng.uniform(180, 330)
    brightness = rng.uniform(0.75, 0.9)
    start = rng.uniform(0.0, 0.1)
    for step in range(int((n / sr - start) / sixteenth) + 1):
        at = int((start + step * sixteenth) * sr)
        if step % 32 in SON_CLAVE_32:
            _add(out, 0.8 * _tone(sr, 0.04, clave_f) * _decay(sr, 0.04, 0.008), at)
        if step % 16 in CONGA_16:
            drop = np.linspace(conga_f * 1.3, conga_f, int(0.15 * sr))
            _add(out, rng.uniform(0.5, 0.9) * _tone(sr, 0.15, drop) * _decay(sr, 0.15, 0.05), at)
        shaker = _highpass(rng.standard_normal(int(0.03 * sr)), sr, 5000) * _decay(sr, 0.03, 0.01)
        _add(out, shaker * (0.25 if step % 2 else 0.12), at)
        if step % 16 in BRASS_16 and rng.random() < 0.85:
            length = sixteenth * int(rng.integers(1, 3))
            stab = sum(_brass(sr, _midi_hz(root + c), length, brightness, 0.004) for c in chord)
            _add(out, 0.18 * stab, at)
    return out


def _dog(rng: Rng, n: int, sr: int) -> np.ndarray:
    out = _lowpass(rng.standard_normal(n), sr, 800) * 0.005
    t = rng.uniform(0.0, 0.4)
    f_base = rng.uniform(350, 900)
    while t < n / sr - 0.1:
        length = rng.uniform(0.08, 0.25)
        m = int(length * sr)
        f0 = f_base * rng.uniform(0.9, 1.1) * np.linspace(1.0, rng.uniform(0.6, 0.85), m)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        voiced = sum(np.sin(k * phase) / k**0.7 for k in range(1, 9))
        rough = _bandpass(rng.standard_normal(m), sr, 1500, 0.6) * 0.8
        env = np.sin(np.pi * np.linspace(0, 1, m)) ** 0.5 * np.exp(-np.linspace(0, 3, m))
        _add(out, (voiced + rough) * env * rng.uniform(0.6, 1.0), int(t * sr))
        # barks come in quick runs separated by longer pauses
        t += length + (rng.uniform(0.08, 0.25) if rng.random() < 0.65 else rng.uniform(0.4, 0.8))
    return out


BELL_PARTIALS = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 3.0, 4.16])  # hum, prime, minor third, fifth, ...


def _bells(rng: Rng, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    bells = [rng.uniform(180, 520)]
    if rng.random() < 0.6:
        bells.append(bells[0] * rng.choice([4 / 3, 3 / 2, 5 / 4]))
    tau = rng.uniform(1.0, 3.0)
    t, k = rng.uniform(0.0, 0.3), 0
    interval = rng.uniform(0.6, 1.3)
    while t < n / sr:
        f = bells[k % len(bells)]
        ring = n / sr - t
        strike = sum(
            rng.uniform(0.3, 1.0) * _tone(sr, ring, f * p, rng.uniform(0, 2 * np.pi)) * _decay(sr, ring, tau / p**0.7)
            for p in BELL_PARTIALS
        )
        _add(out, strike * rng.uniform(0.7, 1.0), int(t * sr))
        t += interval * rng.uniform(0.95, 1.05)
        k += 1
    return out


def _birds(rng: Rng, n: int, sr: int) -> np.ndarray:
    out = _highpass(rng.standard_normal(n), sr, 2000) * 0.01
    nyquist = sr / 2
    for _ in range(rng.poisson(rng.uniform(3, 8) * n / sr) + 1):
        length = rng.uniform(0.03, 0.15)
        m = int(length * sr)
        f0 = rng.uniform(2000, min(6000, 0.7 * nyquist))
        sweep = rng.uniform(-1500, 2500)
        trill = rng.uniform(0, 500) * np.sin(2 * np.pi * rng.uniform(20, 40) * np.arange(m) / sr)
        freq = np.clip(f0 + sweep * np.linspace(0, 1, m) + trill, 500, 0.9 * nyquist)
        env = np.hanning(m)
        _add(out, _tone(sr, length, freq) * env * rng.uniform(0.3, 1.0), int(rng.integers(n)))
    return out


GENERATORS: dict[str, Callable[[Rng, int, int], np.ndarray]] = {
    "fire crackling": _fire,
    "rain": _rain,
    "wind": _wind,
    "explosion": _explosion,
    "thunderstorm": _thunderstorm,
    "folk music": _folk,
    "latin music": _latin,
    "dog barking": _dog,
    "church bells": _bells,
    "birds chirping": _birds,
}


def synthesize(label: str, seed: int, sample_rate: int = 16000, seconds: float = DEFAULT_SECONDS) -> np.ndarray:
    """One clip of class `label`: float32 mono, `seconds` long, peak level drawn in [-18, -3] dBFS."""
    if label not in GENERATORS:
        raise ValueError(f"unknown sound class {label!r}; choose from {SOUND_CLASSES}")
    if seconds <= 0 or sample_rate < 8000:
        raise ValueError(f"need seconds > 0 and sample_rate >= 8000, got {seconds}, {sample_rate}")
    rng = np.random.default_rng([int(seed), SOUND_CLASSES.index(label)])
    n = int(round(seconds * sample_rate))
    x = GENERATORS[label](rng, n, sample_rate)[:n]
    x = x + rng.standard_normal(n) * 1e-4 * np.abs(x).max()  # a faint noise floor, as in any recording
    peak = 10.0 ** (rng.uniform(-18.0, -3.0) / 20.0)
    return (x * (peak / max(np.abs(x).max(), 1e-12))).astype(np.float32)


def _youtube_like_id(seed: int, label: str, index: int) -> str:
    """A stable 11-character id in YouTube's alphabet; index 0 starts with '-', as many real ids do."""
    digest = hashlib.blake2b(f"{seed}:{label}:{index}".encode(), digest_size=9).digest()
    ident = base64.urlsafe_b64encode(digest).decode()[:11]
    return "-" + ident[1:] if index == 0 else ident


def write_sound_set(
    out_dir: str | os.PathLike,
    clips_per_class: int,
    seed: int = 0,
    sample_rate: int = 16000,
    seconds: float = DEFAULT_SECONDS,
    test_fraction: float = 0.2,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write the set to `out_dir` in the VGGSound layout and return `out_dir`.

    A folder already holding a set written with the same arguments is reused as is; a folder holding a
    different set (or any other `vggsound.csv`) is left untouched and raises, unless `overwrite`.
    """
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be at least 1, got {clips_per_class}")
    out = Path(out_dir)
    params = dict(clips_per_class=clips_per_class, seed=seed, sample_rate=sample_rate, seconds=seconds,
                  test_fraction=test_fraction, classes=SOUND_CLASSES)
    manifest, csv_path = out / MANIFEST, out / "vggsound.csv"
    if csv_path.exists() and not overwrite:
        if manifest.exists() and json.loads(manifest.read_text()) == params:
            return out
        raise FileExistsError(f"{csv_path} already exists (a different data set); pass overwrite=True / --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    n_test = round(test_fraction * clips_per_class)
    rows = []
    jobs = [(label, i) for label in SOUND_CLASSES for i in range(clips_per_class)]
    for label, i in tqdm(jobs, desc="soundzoo", disable=not progress):
        clip_seed = seed * 100_003 + i
        youtube_id = _youtube_like_id(seed, label, i)
        start = 10 * (int(hashlib.blake2b(youtube_id.encode(), digest_size=2).hexdigest(), 16) % 30)
        sf.write(out / f"{youtube_id}_{start:06d}.flac", synthesize(label, clip_seed, sample_rate, seconds),
                 sample_rate, subtype="PCM_16")
        rows.append((youtube_id, start, label, "test" if i >= clips_per_class - n_test else "train"))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    manifest.write_text(json.dumps(params, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m datamodules.soundzoo", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder (VGGSound layout: vggsound.csv + FLAC files)")
    parser.add_argument("--clips-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing vggsound.csv in OUT")
    args = parser.parse_args(argv)
    out = write_sound_set(args.out, args.clips_per_class, args.seed, args.sample_rate, args.seconds,
                          args.test_fraction, args.overwrite, progress=True)
    print(f"wrote {len(SOUND_CLASSES) * args.clips_per_class} clips of {args.seconds:g} s to {out}")


if __name__ == "__main__":
    main()
