"""Tests for speakerverify.frontend.features: Kaldi equality, batching, padding, CMN, gradients,
masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from speakerverify.frontend.fbank_config import FbankConfig, dct_basis
from speakerverify.frontend.features import Fbank, SpecAugment
from speakerverify.testing import speech_like

TOLERANCE = 1e-3  # max abs difference on log-mel, before CMN


def speech(num_samples: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(speech_like(num_samples / 16000, seed=seed))[:num_samples]


def kaldi_reference(wave: torch.Tensor, config: FbankConfig) -> torch.Tensor:
    return kaldi.fbank(
        wave[None],
        num_mel_bins=config.num_mel_bins,
        frame_length=config.frame_length_ms,
        frame_shift=config.frame_shift_ms,
        dither=0.0,
        preemphasis_coefficient=config.preemphasis,
        remove_dc_offset=config.remove_dc_offset,
        window_type=config.window_type,
        low_freq=config.low_freq,
        high_freq=config.high_freq,
        snip_edges=config.snip_edges,
        sample_frequency=config.sample_rate,
    )


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    waves = torch.zeros(len(lengths), max(lengths))
    for row, length in enumerate(lengths):
        waves[row, :length] = speech(length, seed + row)
    return waves, torch.tensor(lengths)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"snip_edges": False},
        {"window_type": "hamming", "num_mel_bins": 40},
        {"window_type": "hanning", "remove_dc_offset": False, "preemphasis": 0.0},
        {"window_type": "blackman", "low_freq": 60.0, "high_freq": -400.0},
        {"window_type": "rectangular", "frame_length_ms": 32.0, "frame_shift_ms": 12.0},
    ],
)
def test_padded_batch_equals_kaldi_fbank_per_utterance(options):
    config = FbankConfig(cmn=False, **options)
    lengths = [16000, 12345, 8001, 4003]  # odd lengths, padded rows
    waves, lengths_tensor = padded_batch(lengths)
    feats, feat_lengths = Fbank(config)(waves, lengths_tensor)
    assert feats.shape == (4, max(feat_lengths), config.num_mel_bins)
    for row, length in enumerate(lengths):
        reference = kaldi_reference(waves[row, :length], config)
        assert int(feat_lengths[row]) == reference.shape[0]
        difference = (feats[row, : reference.shape[0]] - reference).abs().max()
        assert float(difference) <= TOLERANCE
        assert bool((feats[row, reference.shape[0] :] == 0).all())


def test_single_wave_and_odd_lengths_match_kaldi():
    fbank = Fbank(FbankConfig(cmn=False))
    for length in [400, 401, 559, 560, 7777]:
        wave = speech(length, seed=length)
        feats, feat_lengths = fbank(wave)
        reference = kaldi_reference(wave, fbank.config)
        assert feats.shape == (1, reference.shape[0], 80)
        assert feat_lengths.tolist() == [reference.shape[0]] == [fbank.num_frames(length)]
        assert float((feats[0] - reference).abs().max()) <= TOLERANCE


@pytest.mark.parametrize("chunk_frames", [7, 50, 1024])
def test_chunk_boundaries_do_not_change_the_result(monkeypatch, chunk_frames):
    # Rows longer than a chunk are split into frame ranges, shorter rows grouped: both exact.
    import speakerverify.frontend.features as features

    fbank = Fbank(FbankConfig(cmn=False))
    lengths = [16000, 12345, 3001]
    waves, lengths_tensor = padded_batch(lengths, seed=11)
    expected = [kaldi_reference(waves[row, :n], fbank.config) for row, n in enumerate(lengths)]
    monkeypatch.setattr(features, "_CHUNK_FRAMES", chunk_frames)
    feats, feat_lengths = fbank(waves, lengths_tensor)
    for row, reference in enumerate(expected):
        assert int(feat_lengths[row]) == reference.shape[0]
        assert float((feats[row, : reference.shape[0]] - reference).abs().max()) <= TOLERANCE


def test_long_utterance_matches_kaldi():
    wave = speech(16000 * 25 + 241, seed=9)  # 2,500 frames: several chunks
    fbank = Fbank(FbankConfig(cmn=False))
    feats, _ = fbank(wave)
    reference = kaldi_reference(wave, fbank.config)
    assert feats.shape[1] == reference.shape[0] == 2500
    assert float((feats[0] - reference).abs().max()) <= TOLERANCE


def test_float64_input_matches_kaldi_closely():
    wave = speech(9000, seed=3).double()
    feats, _ = Fbank(FbankConfig(cmn=False))(wave)
    reference = kaldi_reference(wave, FbankConfig())
    assert feats.dtype == torch.float64
    assert float((feats[0] - reference).abs().max()) < 1e-6


def test_batch_equals_loop_of_singles_with_cmn():
    fbank = Fbank()
    lengths = [16000, 9999, 4800]
    waves, lengths_tensor = padded_batch(lengths, seed=7)
    feats, feat_lengths = fbank(waves, lengths_tensor)
    for row, length in enumerate(lengths):
        single, single_length = fbank(waves[row, :length])
        assert int(single_length) == int(feat_lengths[row])
        torch.testing.assert_close(feats[row, : int(single_length)], single[0], atol=1e-5, rtol=0)


def test_padding_content_does_not_leak_into_valid_frames():
    fbank = Fbank()
    waves, lengths = padded_batch([16000, 8000], seed=2)
    noisy = waves.clone()
    noisy[1, 8000:] = torch.randn(8000)  # garbage in the padding
    clean_feats, _ = fbank(waves, lengths)
    noisy_feats, _ = fbank(noisy, lengths)
    torch.testing.assert_close(clean_feats, noisy_feats, atol=0, rtol=0)


def test_cmn_is_over_valid_frames_only():
    fbank = Fbank()
    waves, lengths = padded_batch([16000, 6000], seed=4)
    feats, feat_lengths = fbank(waves, lengths)
    raw, _ = Fbank(FbankConfig(cmn=False))(waves, lengths)
    for row in range(2):
        valid = int(feat_lengths[row])
        assert float(feats[row, :valid].mean(dim=0).abs().max()) < 1e-4
        expected = raw[row, :valid] - raw[row, :valid].mean(dim=0)
        torch.testing.assert_close(feats[row, :valid], expected, atol=1e-5, rtol=0)
        assert bool((feats[row, valid:] == 0).all())


def test_cvn_gives_unit_variance_over_valid_frames_only():
    """Each band of each row: mean 0 and variance 1 over its own valid frames, zeros after;
    the same as CMN's output divided by its per-band standard deviation."""
    waves, lengths = padded_batch([16000, 6000], seed=4)
    feats, feat_lengths = Fbank(FbankConfig(cvn=True))(waves, lengths)
    centred, _ = Fbank()(waves, lengths)
    for row in range(2):
        valid = int(feat_lengths[row])
        band = feats[row, :valid].double()
        assert float(band.mean(0).abs().max()) < 1e-4
        assert float((band.square().mean(0) - 1).abs().max()) < 1e-4
        expected = centred[row, :valid] / centred[row, :valid].square().mean(0).sqrt()
        torch.testing.assert_close(feats[row, :valid], expected, atol=1e-4, rtol=0)
        assert bool((feats[row, valid:] == 0).all())


def test_cvn_leaves_a_constant_band_at_zero_and_needs_cmn():
    feats, _ = Fbank(FbankConfig(cvn=True))(torch.zeros(1, 8000))  # every band at the log floor
    assert bool(torch.isfinite(feats).all()) and float(feats.abs().max()) < 1e-3
    with pytest.raises(ValueError, match="cvn"):
        FbankConfig(cmn=False, cvn=True)


def test_lengths_longer_than_the_batch_are_rejected():
    with pytest.raises(ValueError, match="lengths"):
        Fbank()(torch.randn(2, 1000), torch.tensor([1000, 1001]))


def test_too_short_rows_give_zero_frames():
    feats, feat_lengths = Fbank()(torch.randn(2, 500), torch.tensor([500, 300]))
    assert feat_lengths.tolist() == [1, 0]
    assert bool((feats[1] == 0).all()) and bool(torch.isfinite(feats).all())
    empty, empty_lengths = Fbank()(torch.randn(1, 100))
    assert empty.shape == (1, 0, 80) and empty_lengths.tolist() == [0]


def test_gradients_flow_to_the_waveform_and_match_no_grad_values():
    fbank = Fbank()
    waves, lengths = padded_batch([8000, 6001], seed=5)
    with torch.no_grad():
        expected, _ = fbank(waves, lengths)
    waves.requires_grad_(True)
    feats, _ = fbank(waves, lengths)
    torch.testing.assert_close(feats, expected, atol=1e-4, rtol=0)
    (feats * torch.linspace(-1, 1, 80)).sum().backward()
    grad = waves.grad
    assert grad is not None and bool(torch.isfinite(grad).all())
    assert float(grad[0].abs().sum()) > 0 and float(grad[1, :6001].abs().sum()) > 0
    assert float(grad[1, 6001:].abs().max()) == 0.0  # padding does not influence the output


def test_gradcheck_on_a_tiny_input():
    config = FbankConfig(num_mel_bins=23, cmn=True)
    fbank = Fbank(config).double()
    wave = (0.1 * torch.randn(1, 560, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: fbank(w)[0], (wave,), eps=1e-6, atol=1e-4)


def test_buffers_follow_to_and_state_dict_stays_empty():
    fbank = Fbank()
    assert fbank.state_dict() == {}  # the config, not tensors, describes the front-end
    moved = fbank.to(torch.float16)
    assert moved.mel_banks.dtype == torch.float16 and moved.window.dtype == torch.float16
    assert moved.mel_banks.shape == (257, 80)


def test_autocast_does_not_lower_the_precision():
    fbank = Fbank()
    wave = speech(8000, seed=2)
    expected, _ = fbank(wave)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats, _ = fbank(wave)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0)


def test_dither_only_in_training():
    fbank = Fbank(FbankConfig(dither=1e-3)).eval()
    wave = speech(8000, seed=1)
    first, _ = fbank(wave)
    assert torch.equal(first, fbank(wave)[0])
    fbank.train()
    assert not torch.equal(fbank(wave)[0], fbank(wave)[0])


@pytest.mark.parametrize(
    "options",
    [
        {"num_ceps": 30},
        {"num_ceps": 13, "cepstral_lifter": 22.0},
        {"num_ceps": 40, "num_mel_bins": 40, "snip_edges": False, "cepstral_lifter": 8.0},
    ],
)
def test_cepstra_equal_kaldi_mfcc_per_utterance(options):
    """`num_ceps` gives Kaldi's MFCCs (no energy term): torchaudio's `kaldi.mfcc` row by row."""
    config = FbankConfig(cmn=False, **options)
    lengths = [16000, 12345, 4003]
    waves, lengths_tensor = padded_batch(lengths, seed=5)
    feats, feat_lengths = Fbank(config)(waves, lengths_tensor)
    assert (
        feats.shape == (3, max(feat_lengths), config.num_ceps)
        and config.feat_dim == config.num_ceps
    )
    for row, length in enumerate(lengths):
        reference = kaldi.mfcc(
            waves[row : row + 1, :length],
            num_ceps=config.num_ceps,
            num_mel_bins=config.num_mel_bins,
            cepstral_lifter=config.cepstral_lifter,
            use_energy=False,
            dither=0.0,
            snip_edges=config.snip_edges,
        )
        assert int(feat_lengths[row]) == reference.shape[0]
        scale = float(reference.abs().max())
        assert float((feats[row, : reference.shape[0]] - reference).abs().max()) <= 1e-5 * scale
        assert bool((feats[row, reference.shape[0] :] == 0).all())


def test_cepstra_keep_the_envelope_and_drop_the_harmonics():
    """All cepstra are an orthogonal change of basis of the log-mel (nothing lost); the first
    few keep a smooth envelope, so a harmonic ripple across the bands is mostly removed."""
    wave = speech(16000, seed=3)
    log_mel, _ = Fbank(FbankConfig())(wave)
    full, _ = Fbank(FbankConfig(num_ceps=80))(wave)
    assert torch.allclose(full.square().sum(-1), log_mel.square().sum(-1), rtol=1e-4)
    dct = torch.tensor(FbankConfig(num_ceps=80).dct_matrix(), dtype=torch.float64)
    assert torch.allclose(dct.T @ dct, torch.eye(80, dtype=torch.float64), atol=1e-12)
    ripple = torch.cos(torch.arange(80, dtype=torch.float64) * torch.pi * 0.8)  # fast in frequency
    smooth = torch.linspace(-1.0, 1.0, 80, dtype=torch.float64)
    first = dct[:, :20]
    assert float((ripple @ first).norm()) < 0.1 * float(ripple.norm())
    assert float((smooth @ first).norm()) > 0.99 * float(smooth.norm())


def test_cepstra_size_the_encoder_input(tmp_path):
    from speakerverify.training.experiment_config import load_config
    from speakerverify.training.setup import build_model_args

    path = tmp_path / "exp.yaml"
    path.write_text("data: {train_dir: data/train}\n")
    assert build_model_args(load_config(path))["feat_dim"] == 80
    assert build_model_args(load_config(path, ["features.num_ceps=30"]))["feat_dim"] == 30


@pytest.mark.parametrize("options", [{}, {"num_ceps": 30}, {"noise_floor_db": -30.0}])
def test_partial_cmn_subtracts_only_the_smooth_part_of_the_mean(options):
    """`cmn_ceps`: the features without CMN, minus the mean frame's projection on the first
    cepstral basis vectors, over each row's valid frames; the rest of the mean stays."""
    lengths = [16000, 9001]
    waves, lengths_tensor = padded_batch(lengths, seed=11)
    raw, _ = Fbank(FbankConfig(cmn=False, **options))(waves, lengths_tensor)
    partial, feat_lengths = Fbank(FbankConfig(cmn_ceps=3, **options))(waves, lengths_tensor)
    full, _ = Fbank(FbankConfig(**options))(waves, lengths_tensor)
    dim = raw.shape[-1]
    if "num_ceps" in options:
        smooth = torch.eye(dim, dtype=torch.float64)[:, :3]
    else:
        smooth = torch.tensor(dct_basis(dim, 3), dtype=torch.float64)
    for row, frames in enumerate(feat_lengths.tolist()):
        mean = raw[row, :frames].double().mean(0)
        expected = raw[row, :frames].double() - smooth @ (smooth.T @ mean)
        assert torch.allclose(partial[row, :frames].double(), expected, atol=1e-4)
        assert bool((partial[row, frames:] == 0).all())
        # What full CMN removes and partial CMN keeps: the mean's non-smooth part.
        kept = (partial[row, :frames] - full[row, :frames]).double().mean(0)
        assert torch.allclose(kept, mean - smooth @ (smooth.T @ mean), atol=1e-4)
        assert float(kept.norm()) > 0.1


def test_partial_cmn_ignores_gain_and_smooth_spectral_tilts():
    """A gain adds a constant to every log-mel band and a smooth EQ a slowly varying curve: the
    projection CMN subtracts takes both out whole, and leaves a formant-like bump mostly in."""
    projection = torch.tensor(FbankConfig(cmn_ceps=3).cmn_projection(), dtype=torch.float64)
    assert torch.allclose(projection @ projection, projection, atol=1e-12)
    assert torch.allclose(projection, projection.T) and round(float(projection.trace())) == 3
    bands = torch.arange(80, dtype=torch.float64)
    phase = torch.pi * (bands + 0.5) / 80
    gain, tilt = torch.full((80,), 1.7, dtype=torch.float64), -0.8 * torch.cos(phase)
    bow = 0.3 * torch.cos(2 * phase)
    assert torch.allclose(projection @ (gain + tilt + bow), gain + tilt + bow, atol=1e-12)
    ramp = -0.03 * bands  # a straight tilt: nearly all of it
    assert float((ramp - projection @ ramp).norm()) < 0.1 * float(ramp.norm())
    bump = torch.exp(-0.5 * ((bands - 30) / 3) ** 2)
    assert float((bump - projection @ bump).norm()) > 0.8 * float(bump.norm())
    wave = speech(16000, seed=4)
    louder, _ = Fbank(FbankConfig(cmn_ceps=1, noise_floor_db=-30.0))(wave * 3.0)
    quiet, _ = Fbank(FbankConfig(cmn_ceps=1, noise_floor_db=-30.0))(wave)
    assert torch.allclose(louder, quiet, atol=1e-3)


def test_config_dict_round_trip_and_validation():
    config = FbankConfig(num_mel_bins=64, cmn=False)
    assert FbankConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="valid are"):
        FbankConfig.from_dict({"num_mel_bin": 80})
    with pytest.raises(ValueError, match="window_type"):
        FbankConfig(window_type="kaiser")
    with pytest.raises(ValueError, match="high_freq"):
        FbankConfig(low_freq=9000.0)
    with pytest.raises(ValueError, match="num_ceps must be in"):
        FbankConfig(num_ceps=81)
    with pytest.raises(ValueError, match="cepstral_lifter"):
        FbankConfig(num_ceps=13, cepstral_lifter=-1.0)
    with pytest.raises(ValueError, match="partial CMN"):
        FbankConfig(cmn=False, cmn_ceps=3)
    with pytest.raises(ValueError, match="partial CMN"):
        FbankConfig(cvn=True, cmn_ceps=3)
    with pytest.raises(ValueError, match="cmn_ceps must be in"):
        FbankConfig(num_ceps=20, cmn_ceps=21)


def test_specaugment_masks_only_in_training_and_is_reproducible():
    augment = SpecAugment(num_time_masks=2, max_time_mask_frames=10, num_freq_masks=2)
    feats = torch.randn(4, 100, 80) + 5.0
    lengths = torch.tensor([100, 80, 50, 30])
    assert augment.eval()(feats, lengths) is feats
    augment.train()
    first = augment(feats, lengths, generator=torch.Generator().manual_seed(3))
    second = augment(feats, lengths, generator=torch.Generator().manual_seed(3))
    other = augment(feats, lengths, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, second) and not torch.equal(first, other)
    zeroed = first == 0
    assert bool(zeroed.any())
    kept = ~zeroed
    assert torch.equal(first[kept], feats[kept])  # everything not masked is untouched
    # Masks are whole time spans or frequency bands.
    time_masked = zeroed.all(dim=2)
    freq_masked = zeroed.all(dim=1)
    assert torch.equal(zeroed, time_masked[:, :, None] | freq_masked[:, None, :])
    assert int(time_masked.sum(dim=1).max()) <= 2 * 10
    assert int(freq_masked.sum(dim=1).max()) <= 2 * 8
    for row, length in enumerate(lengths.tolist()):
        assert not bool(time_masked[row, length:].any())  # time masks stay inside valid frames


def test_specaugment_keeps_gradients():
    augment = SpecAugment().train()
    feats = torch.randn(2, 40, 80, requires_grad=True)
    augment(feats, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert feats.grad is not None
    assert set(feats.grad.unique().tolist()) <= {0.0, 1.0}
    assert float(feats.grad.sum()) > 0


def test_noise_floor_energy_equals_the_mean_fbank_energy_of_white_noise():
    # The floor is the *expected* mel energy of white noise: check it against a Monte Carlo mean.
    frontend = Fbank(FbankConfig(cmn=False)).eval()
    noise = torch.randn(4, 160000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    feats, _ = frontend(noise)
    measured = feats.exp().mean(dim=(0, 1))
    expected = frontend.noise_mel_energy.double()
    assert torch.allclose(measured, expected, rtol=0.08)


def test_noise_floor_is_relative_to_each_utterance_so_gain_changes_nothing():
    frontend = Fbank(FbankConfig(noise_floor_db=-40.0)).eval()
    waves = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    lengths = torch.tensor([16000, 11000])
    feats, _ = frontend(waves, lengths)
    louder, _ = frontend(waves * torch.tensor([[30.0], [0.01]]), lengths)
    assert torch.allclose(feats, louder, atol=1e-3)
    plain, _ = Fbank(FbankConfig()).eval()(waves * torch.tensor([[30.0], [0.01]]), lengths)
    assert not torch.allclose(feats, plain, atol=1e-2)  # the floor does change the features


def test_noise_floor_fills_an_empty_band_with_the_same_value_whatever_the_recording():
    # A telephone-band signal leaves the top bands empty: without the floor their log energies
    # sit on Kaldi's epsilon clamp or on quantisation noise; with it they sit on the floor.
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(2)
    band = butter(8, 3000, fs=16000, output="sos")
    narrow = sosfilt(band, rng.standard_normal(32000)) * 0.05
    quantised = np.round(narrow * 32768) / 32768
    config = FbankConfig(cmn=False, noise_floor_db=-30.0)
    frontend = Fbank(config).eval()
    for wave in (narrow, quantised):
        feats, _ = frontend(torch.from_numpy(wave))
        power = float(np.mean(wave**2)) * 10 ** (-30.0 / 10)
        floor = torch.log(frontend.noise_mel_energy.double() * power)
        top = feats[0, :, -10:].double()  # mel bins far above 3 kHz
        assert torch.allclose(top, floor[-10:].expand_as(top), atol=0.05)


def test_noise_floor_gradients_match_the_no_grad_path():
    frontend = Fbank(FbankConfig(noise_floor_db=-35.0)).eval()
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(3)) * 0.2
    lengths = torch.tensor([8000, 6000])
    fast, _ = frontend(waves, lengths)
    slow, _ = frontend(waves.clone().requires_grad_(True), lengths)
    assert torch.allclose(fast, slow.detach(), atol=1e-4)
