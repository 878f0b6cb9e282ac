"""Simulated recording channels: stages as drawn (SNR, RT60, band limits, codec), determinism,
per-crop conditions that do not depend on the speaker, and the two room simulations."""

from __future__ import annotations

import sys
from dataclasses import replace
from importlib.util import find_spec

import numpy as np
import pytest

from speakerverify.data.simulate import (
    Channel,
    ChannelSimulator,
    MissingExtraError,
    apply_channel,
    colored_noise,
    mu_law,
    room_impulse_response,
    shoebox_impulse_response,
)
from speakerverify.errors import SpeakerVerifyError
from speakerverify.testing import speech_like

SR = 16000
needs_rooms = pytest.mark.skipif(
    find_spec("pyroomacoustics") is None,
    reason="pyroomacoustics missing: pip install 'speakerverify[rooms]'",
)


def schroeder_rt60(rir):
    """RT60 from Schroeder backward integration: the -5 to -25 dB decay (T20) times 3."""
    decay = 10 * np.log10(np.cumsum(rir[::-1] ** 2)[::-1] / np.sum(rir**2))
    t = np.arange(len(rir)) / SR
    fit = (decay <= -5) & (decay >= -25)
    slope = np.polyfit(t[fit], decay[fit], 1)[0]
    return -60 / slope


def band_energy_db(wave, low, high):
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / SR)
    inside = spectrum[(freqs >= low) & (freqs < high)].sum()
    return 10 * np.log10(inside / spectrum.sum())


def test_same_seed_same_audio_other_seed_other_audio():
    wave = speech_like(2.0, seed=0)
    simulator = ChannelSimulator()
    first = simulator(wave, np.random.default_rng(7))
    again = simulator(wave, np.random.default_rng(7))
    other = simulator(wave, np.random.default_rng(8))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.dtype == np.float32 and first.shape == wave.shape


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_is_mixed_at_the_drawn_snr(snr_db):
    wave = speech_like(2.0, seed=1).astype(np.float64)
    channel = Channel(noise="pink", snr_db=snr_db, level_db=-20.0)
    mixed = apply_channel(wave, channel, np.random.default_rng(3)).astype(np.float64)
    # The same rng stream gives the same noise: rebuild it to measure the mix.
    noise = colored_noise(np.random.default_rng(3), "pink", len(wave))
    gain = np.sqrt(np.mean(mixed**2) / np.mean((wave + noise * 0) ** 2))  # level normalisation
    speech_part = wave * 0  # solve mixed = g * (wave + a * noise) for a by least squares
    basis = np.stack([wave, noise], axis=1)
    (g_speech, g_noise), *_ = np.linalg.lstsq(basis, mixed, rcond=None)
    measured = 10 * np.log10(np.mean((g_speech * wave) ** 2) / np.mean((g_noise * noise) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.1)
    assert gain > 0 and not speech_part.any()


@pytest.mark.parametrize("rt60", [0.25, 0.6])
def test_room_impulse_response_decays_by_60_db_in_rt60(rt60):
    rir = room_impulse_response(np.random.default_rng(4), rt60)
    assert np.sum(rir**2) == pytest.approx(1.0)
    assert schroeder_rt60(rir) == pytest.approx(rt60, rel=0.3)


@needs_rooms
@pytest.mark.parametrize(("rt60", "tolerance"), [(0.3, 0.3), (0.7, 0.1)])
def test_shoebox_room_decays_by_60_db_in_rt60(rt60, tolerance):
    # Over 100 seeds: 0.80-1.13 x rt60 at 0.3 s, 0.94-1.04 x at 0.7 s. Short rooms decay a
    # little faster than Sabine's formula promises (image sources of absorbing walls); from
    # order 15 on a noise tail continues the level at the asked decay, which long rooms follow.
    for seed in range(6):
        rir = shoebox_impulse_response(np.random.default_rng(seed), rt60)
        assert schroeder_rt60(rir) == pytest.approx(rt60, rel=tolerance), seed


@needs_rooms
def test_shoebox_room_has_unit_energy_and_the_direct_path_first():
    for seed in range(4):
        rir = shoebox_impulse_response(np.random.default_rng(seed), 0.5)
        assert rir.dtype == np.float64 and rir.ndim == 1
        assert np.sum(rir**2) == pytest.approx(1.0)
        # 0.5 s from the direct path, which arrives after half the 81-tap fractional delay
        assert len(rir) == 40 + SR // 2
        peak = int(np.argmax(np.abs(rir)))
        first = int(np.argmax(np.abs(rir) >= 0.5 * np.abs(rir[peak])))
        assert peak in (40, 41) and peak - first <= 1  # a fractional delay spreads it over two
        # before it only the filter's own ringing: under a tenth of the peak 8 samples out
        assert np.max(np.abs(rir[: first - 8])) < 0.1 * np.abs(rir[peak])


@needs_rooms
def test_shoebox_room_comes_from_the_rng_alone():
    # Any global randomness (numpy's, the library's) would have moved on between the calls.
    first = shoebox_impulse_response(np.random.default_rng(11), 0.4)
    again = shoebox_impulse_response(np.random.default_rng(11), 0.4)
    other = shoebox_impulse_response(np.random.default_rng(12), 0.4)
    assert np.array_equal(first, again)
    assert len(other) != len(first) or not np.allclose(other, first)


@needs_rooms
def test_shoebox_rooms_reverberate_the_drawn_channels():
    wave = speech_like(1.0, seed=3)
    simple = ChannelSimulator(reverb_prob=1.0)
    shoebox = ChannelSimulator(reverb_prob=1.0, room="shoebox")
    channel = shoebox.draw(np.random.default_rng(5))
    assert channel.room == "shoebox"
    assert channel == replace(simple.draw(np.random.default_rng(5)), room="shoebox")
    out = shoebox(wave, np.random.default_rng(5))
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert np.array_equal(out, shoebox(wave, np.random.default_rng(5)))
    assert not np.allclose(out, simple(wave, np.random.default_rng(5)), atol=1e-3)


def test_default_room_keeps_the_simple_rooms_random_stream():
    # Seeded training crops and synthetic corpora made before the shoebox room existed must
    # not change: draw() takes no extra numbers, and apply_channel hands the simple room the
    # rng where room_impulse_response always found it.
    rng, replay = np.random.default_rng(21), np.random.default_rng(21)
    channel = ChannelSimulator(reverb_prob=1.0).draw(rng)
    replay.random(8), replay.uniform(), replay.integers(5), replay.uniform()
    replay.standard_normal(6), replay.uniform(), replay.uniform(), replay.uniform()
    assert channel.room == "simple" and channel.rt60 > 0
    assert rng.bit_generator.state == replay.bit_generator.state
    wave = speech_like(1.0, seed=4).astype(np.float64)
    dry = Channel(rt60=channel.rt60, level_db=-20.0)
    out = apply_channel(wave, dry, np.random.default_rng(22))
    from scipy.signal import fftconvolve

    rir = room_impulse_response(np.random.default_rng(22), channel.rt60)
    expected = fftconvolve(wave, rir)[: len(wave)]
    expected *= 10 ** (-20 / 20) / np.sqrt(np.mean(expected**2))
    assert np.array_equal(out, np.clip(expected, -1.0, 32767 / 32768).astype(np.float32))


def test_narrowband_and_telephone_empty_the_upper_band():
    wave = np.random.default_rng(5).standard_normal(32000) * 0.1
    wide = apply_channel(wave, Channel(), np.random.default_rng(0))
    narrow = apply_channel(wave, Channel(narrowband=True), np.random.default_rng(0))
    phone = apply_channel(wave, Channel(narrowband=True, telephone=True), np.random.default_rng(0))
    assert band_energy_db(wide, 4200, 8000) > -4
    assert band_energy_db(narrow, 4600, 8000) < -40
    assert band_energy_db(phone, 4600, 8000) < -40
    assert band_energy_db(phone, 0, 150) < band_energy_db(narrow, 0, 150) - 15


def test_mu_law_keeps_the_waveform_within_its_quantisation_step():
    wave = np.sin(np.arange(800) * 0.05) * 0.3
    coded = mu_law(wave)
    assert np.max(np.abs(coded - wave)) < 0.3 * 0.05
    assert len(np.unique(np.round(coded, 9))) <= 255


def test_level_is_set_and_stays_within_full_scale():
    wave = speech_like(1.0, seed=2)
    out = apply_channel(wave, Channel(level_db=-30.0), np.random.default_rng(0))
    assert 10 * np.log10(np.mean(out.astype(np.float64) ** 2)) == pytest.approx(-30.0, abs=0.1)
    loud = apply_channel(wave, Channel(level_db=0.0), np.random.default_rng(0))
    assert np.max(np.abs(loud)) <= 1.0


def test_draw_follows_the_probabilities_and_ranges():
    simulator = ChannelSimulator(reverb_prob=0.25, narrowband_prob=0.5, snr_db_range=(5, 6))
    rng = np.random.default_rng(9)
    channels = [simulator.draw(rng) for _ in range(2000)]
    assert np.mean([c.rt60 > 0 for c in channels]) == pytest.approx(0.25, abs=0.04)
    assert np.mean([c.narrowband for c in channels]) == pytest.approx(0.5, abs=0.04)
    assert all(5 <= c.snr_db <= 6 for c in channels)
    assert all(c.lowpass_hz is None for c in channels if c.narrowband)
    assert all(not c.mulaw for c in channels if not c.narrowband)


def test_conditions_per_crop_do_not_depend_on_the_speaker(tmp_path):
    # CropDataset draws each crop's randomness from its item seed only: the share of narrowband
    # crops is the same for every speaker (binomial bounds), so the channel is no speaker cue.
    import soundfile as sf

    from speakerverify.data import CropDataset, DataDir, PKSampler
    from speakerverify.data.augment import Augmenter

    wav_scp, utt2spk = [], []
    for spk in range(4):
        for utt in range(3):
            path = tmp_path / f"s{spk}_{utt}.wav"
            sf.write(path, speech_like(1.0, seed=10 * spk + utt), SR)
            wav_scp.append(f"s{spk}-{utt} {path}")
            utt2spk.append(f"s{spk}-{utt} s{spk}")
    (tmp_path / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (tmp_path / "utt2spk").write_text("\n".join(utt2spk) + "\n")
    drawn = []

    def channel(wave, rng):
        condition = ChannelSimulator(narrowband_prob=0.5).draw(rng)
        drawn.append(condition.narrowband)
        return apply_channel(wave, condition, rng)

    dataset = CropDataset(DataDir.load(tmp_path), chunk_seconds=0.5,
                          augmenter=Augmenter(channel=channel))  # fmt: skip
    sampler = PKSampler(dataset.labels, num_speakers=4, num_utts=2, seed=0)
    per_speaker: dict[int, list[bool]] = {}
    for epoch in range(25):
        sampler.set_epoch(epoch)
        for batch in sampler:
            for key in batch:
                drawn.clear()
                dataset[key]
                per_speaker.setdefault(dataset.labels[key[0]], []).append(drawn[0])
    for shares in per_speaker.values():
        assert 0.25 < np.mean(shares) < 0.75  # 50 crops each: 4.6 sigma around 0.5


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="noise_prob"):
        ChannelSimulator(noise_prob=1.5)
    with pytest.raises(ValueError, match="noise_kinds"):
        ChannelSimulator(noise_kinds=("rain",))
    with pytest.raises(ValueError, match="snr_db_range"):
        ChannelSimulator(snr_db_range=(10, 0))
    with pytest.raises(ValueError, match=r"^room 'hall': valid are \['simple', 'shoebox'\]$"):
        ChannelSimulator(room="hall")
    with pytest.raises(ValueError, match=r"^room 'hall': valid are"):
        Channel(rt60=0.5, room="hall")


def test_shoebox_room_without_pyroomacoustics_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyroomacoustics", None)  # import fails as if missing
    message = r"^room 'shoebox' needs pyroomacoustics: pip install 'speakerverify\[rooms\]'$"
    with pytest.raises(MissingExtraError, match=message) as caught:
        ChannelSimulator(room="shoebox")
    assert isinstance(caught.value, SpeakerVerifyError) and isinstance(caught.value, ImportError)
    with pytest.raises(MissingExtraError, match=message):
        shoebox_impulse_response(np.random.default_rng(0), 0.5)
    ChannelSimulator()  # the default room needs nothing


def test_the_training_config_chooses_the_room():
    from speakerverify.config import ConfigError
    from speakerverify.training.experiment_config import Config
    from speakerverify.training.setup import _build_augmenter

    def augmenter(overrides):
        raw = {"data": {"train_dir": "data/train"}, "augment": {"channel": True}}
        return _build_augmenter(Config.from_dict(raw).replace(overrides))

    assert augmenter([]).channel.room == "simple"
    if find_spec("pyroomacoustics") is not None:
        assert augmenter(["augment.channel_args.room=shoebox"]).channel.room == "shoebox"
    message = r"^augment.channel_args: room 'hall': valid are \['simple', 'shoebox'\]$"
    with pytest.raises(ConfigError, match=message):
        augmenter(["augment.channel_args.room=hall"])
