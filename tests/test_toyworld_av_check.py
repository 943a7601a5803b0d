"""The toy-world check of the audio<->image term (experiments/toyworld/av_check.py), end to end.

Short MP4 videos of toy-world paintings whose time of day follows the sound's loudness and whose place follows the
pitch of a tone (information the class label does not carry) go through `prepare_vggsound --frames` (PyAV), the
frame cache (toy CLIP) and training via the CLI, text only and with the image term, for 3 seeds. Held-out
audio->image R@1 over 48 test pairs (12 per class): text-only training can only find the class (chance within it is
1/12 = 0.083); the image term must beat it on every seed and by at least 0.15 on average.
"""

from __future__ import annotations

import statistics

import pytest

from experiments.toyworld.av_check import run_check

MARGIN = 0.15


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_image_term_teaches_what_the_label_cannot(tmp_path):
    result = run_check(tmp_path, (0, 1, 2))
    text, image = result["text_only"], result["with_image"]
    print(f"held-out audio->image R@1 per seed: text only {text}, with image {image}")
    assert result["prepare"]["clips"] == 144 and result["prepare"]["cache_bytes"] == 144 * 4 * 64 * 2
    assert statistics.mean(text) < 0.2  # the class alone: about 1/12
    assert all(i > t for i, t in zip(image, text)), (text, image)
    assert statistics.mean(image) >= statistics.mean(text) + MARGIN, (text, image)
