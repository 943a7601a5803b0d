"""Seeded augmentation of the recording chain: what happens to a sound between the source and a file or a mic.

Each step is a plain numpy function of (signal, rng) that keeps the length; `record` chains them with
probabilities. Everything is deterministic given the `np.random.Generator`, and outputs stay in [-1, 1]:

- room reverb: convolution with a synthetic impulse response (a direct path, sparse early reflections and an
  exponentially decaying noise tail with RT60 0.1-1.5 s, darker as it decays);
- a background bed (coloured noise with random spectral slope, optionally mains hum) mixed at a random SNR
  (`mix_at_snr` hits the requested SNR exactly before any output scaling, which does not change it);
- EQ and band-limiting, from telephone (300-3400 Hz) to full band, with a random spectral tilt;
- gain and clipping; lossy bandwidth (a steep low-pass at a codec's cut-off and coarse quantisation);
- stereo -> mono (two microphones at a small delay and different gains, averaged: comb filtering);
- random onset and length (0.5 s up to the full window, placed anywhere in it);
- microphone-like input: 0.5-1 s chunks through an automatic gain control that levels each chunk.
"""

from __future__ import annotations

import numpy as np

Rng = np.random.Generator


def _filter(x: np.ndarray, sr: int, gain) -> np.ndarray:
    """Zero-phase filter by a magnitude response gain(f), f in Hz (FFT of the whole signal, length kept)."""
    n = len(x)
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 1e-3)
    return np.fft.irfft(np.fft.rfft(x) * gain(freqs), n=n)


def _fit(x: np.ndarray) -> np.ndarray:
    """Scale down to a peak of at most 1 (never up), float32."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    return (x / peak if peak > 1.0 else x).astype(np.float32)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def synthetic_ir(rng: Rng, sr: int, rt60: float) -> np.ndarray:
    """A room impulse response: direct path, 3-8 early reflections in the first 30 ms, then a noise tail that
    decays by 60 dB in `rt60` seconds and loses its highs as it decays."""
    n = max(int(rt60 * sr), 16)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
    # darker as it decays: blend towards a low-passed copy over time
    dark = _filter(tail, sr, lambda f: 1.0 / np.sqrt(1.0 + (f / 2000.0) ** 2))
    mix = np.clip(t / rt60, 0, 1)
    ir = (1 - mix) * tail + mix * dark
    ir *= rng.uniform(0.2, 0.5) / (np.sqrt(np.sum(ir**2)) + 1e-12)
    ir[0] += 1.0
    for _ in range(int(rng.integers(3, 9))):
        ir[int(rng.uniform(0.002, 0.03) * sr) % n] += rng.uniform(-0.6, 0.6)
    return ir


def reverb(x: np.ndarray, rng: Rng, sr: int) -> np.ndarray:
    """Convolve with a synthetic room (RT60 0.1-1.5 s); the tail past the clip's end is cut (length kept)."""
    ir = synthetic_ir(rng, sr, rng.uniform(0.1, 1.5))
    size = len(x) + len(ir) - 1
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), n=size)[: len(x)]
    y *= np.sqrt(power(x) / max(power(y), 1e-20))  # same level as the dry clip
    return _fit(y)


def background_bed(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Room tone / street / fan: noise with a random spectral slope (white to brown), sometimes mains hum."""
    slope = rng.uniform(0.0, 2.0)  # power ~ f^-slope
    bed = _filter(rng.standard_normal(n), sr, lambda f: np.maximum(f, 20.0) ** (-slope / 2))
    if rng.random() < 0.3:
        hum = rng.choice([50.0, 60.0])
        t = np.arange(n) / sr
        bed += sum(np.sin(2 * np.pi * hum * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3)) \
            * np.sqrt(power(bed)) * rng.uniform(0.5, 2.0)
    return bed


def mix_at_snr(x: np.ndarray, bed: np.ndarray, snr_db: float) -> np.ndarray:
    """x + bed scaled so that 10 log10(P_x / P_bed) = snr_db, then scaled into [-1, 1] as a whole."""
    scale = np.sqrt(power(x) / max(power(bed), 1e-20) / 10 ** (snr_db / 10))
    return _fit(x + bed * scale)


def eq_band_limit(x: np.ndarray, rng: Rng, sr: int) -> np.ndarray:
    """Random high-pass (20-400 Hz), low-pass (telephone 3.4 kHz .. Nyquist) and spectral tilt (+-6 dB/octave)."""
    hp, lp = rng.uniform(20, 400), rng.uniform(3400, sr / 2)
    tilt = rng.uniform(-6, 6)
    y = _filter(x, sr, lambda f: (1.0 / np.sqrt(1 + (hp / f) ** 4)) / np.sqrt(1 + (f / lp) ** 8)
                * 10 ** (tilt * np.log2(f / 1000.0) / 20))
    y *= np.sqrt(power(x) / max(power(y), 1e-20))
    return _fit(y)


def gain_clip(x: np.ndarray, rng: Rng) -> np.ndarray:
    """Gain from -30 to +12 dB, then hard clipping at full scale (overloaded recorders clip)."""
    return np.clip(x * 10 ** (rng.uniform(-30, 12) / 20), -1.0, 1.0).astype(np.float32)


def lossy(x: np.ndarray, rng: Rng, sr: int) -> np.ndarray:
    """A codec's bandwidth (steep low-pass at 4-7 kHz) and coarse quantisation (8-12 bits)."""
    cut = min(rng.uniform(4000, 7000), sr / 2)
    y = _filter(x, sr, lambda f: 1.0 / np.sqrt(1 + (f / cut) ** 24))
    step = 2.0 ** (1 - int(rng.integers(8, 13)))
    return _fit(np.round(y / step) * step)


def stereo_to_mono(x: np.ndarray, rng: Rng, sr: int) -> np.ndarray:
    """Average of two microphones: the second hears the source 0.1-3 ms later at 0.3-1x the level."""
    d = int(rng.uniform(0.1e-3, 3e-3) * sr)
    other = np.concatenate([np.zeros(d), x[: len(x) - d]]) * rng.uniform(0.3, 1.0)
    return _fit(0.5 * (x + other))


def onset_and_length(x: np.ndarray, rng: Rng, sr: int, min_seconds: float = 0.5) -> np.ndarray:
    """Keep a random 0.5 s..full-length piece, placed at a random position in zeros of the original length."""
    n = len(x)
    m = int(rng.uniform(min(min_seconds * sr, n), n + 1))
    start = int(rng.integers(0, n - m + 1))
    out = np.zeros(n, np.float32)
    out[int(rng.integers(0, n - m + 1)) :][:m] = x[start : start + m]
    return out


def mic_agc(x: np.ndarray, rng: Rng, sr: int, target_dbfs: float = -20.0, max_gain_db: float = 30.0) -> np.ndarray:
    """A live microphone: 0.5-1 s chunks, each levelled towards `target_dbfs` by an AGC (gain capped, smoothed
    over 50 ms at chunk borders)."""
    n, out = len(x), np.empty(len(x))
    gains = np.empty(n)
    pos = 0
    while pos < n:
        m = int(rng.uniform(0.5, 1.0) * sr)
        chunk = x[pos : pos + m]
        level = 10 * np.log10(max(power(chunk), 1e-12))
        gains[pos : pos + m] = 10 ** (min(max_gain_db, target_dbfs - level) / 20)
        pos += m
    k = max(1, int(0.05 * sr))
    smooth = np.convolve(np.pad(gains, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")
    out = x * smooth
    return _fit(out)


def record(x: np.ndarray, rng: Rng, sr: int = 16000, p: float = 0.5) -> np.ndarray:
    """The whole chain, each step with probability `p` (order: room, background, mics, EQ, codec, level)."""
    y = np.asarray(x, dtype=np.float32)
    if rng.random() < p:
        y = reverb(y, rng, sr)
    if rng.random() < p:
        y = mix_at_snr(y, background_bed(rng, len(y), sr), rng.uniform(0, 30))
    if rng.random() < p * 0.5:
        y = stereo_to_mono(y, rng, sr)
    if rng.random() < p:
        y = eq_band_limit(y, rng, sr)
    if rng.random() < p * 0.5:
        y = lossy(y, rng, sr)
    if rng.random() < p * 0.5:
        y = onset_and_length(y, rng, sr)
    if rng.random() < p * 0.3:
        y = mic_agc(y, rng, sr)
    y = gain_clip(y, rng) if rng.random() < p else _fit(y)
    return y
