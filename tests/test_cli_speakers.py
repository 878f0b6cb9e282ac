"""Tests for the speaker commands: enroll, verify, identify, speakers list/remove/export, adapt.

Most run in-process with Click's CliRunner and a fake spectral embedder in place of a checkpoint;
the exit-code and --help timing tests run real `speakerverify` subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from speaker_helpers import FP, SpectrumEmbedder, store_rows
from synth import random_speaker, speech_like

import speakerverify.backend.speaker_model as speaker_model
from speakerverify.backend.speaker_model import SpeakerModel
from speakerverify.cli import main
from speakerverify.pretrained import bundled_checkpoint

SPEAKERVERIFY = [str(Path(sys.executable).parent / "speakerverify")]


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    """`--model` paths load the fake embedder; their file name becomes the fingerprint tail."""

    def load(path, device="cpu"):
        fingerprint = FP if Path(path).name == "model.pt" else "0000000000000000"
        return SpeakerModel(SpectrumEmbedder(), fingerprint, 16000, str(path))

    monkeypatch.setattr(speaker_model, "load_speaker_model", load)
    # The fake stands in for the torch loader: keep a bundled ONNX twin from bypassing it.
    monkeypatch.setenv("SPEAKERVERIFY_BACKEND", "torch")
    return tmp_path / "model.pt"


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_voices")
    rng = np.random.default_rng(3)
    files = {}
    for s, name in enumerate(["ann", "bo", "cy"]):
        speaker = random_speaker(rng)
        for u in range(3):
            files[f"{name}{u}"] = root / f"{name}{u}.wav"
            sf.write(files[f"{name}{u}"], speech_like(3.0, 16000, speaker, seed=10 * s + u), 16000)
        if name == "ann":  # stereo 44.1 kHz and 8 kHz versions of ann
            wave = speech_like(3.0, 44100, speaker, seed=77)
            files["ann_stereo"] = root / "ann_stereo.flac"
            sf.write(files["ann_stereo"], np.stack([wave, 0.5 * wave], axis=1), 44100)
            files["ann_8k"] = root / "ann_8k.wav"
            sf.write(files["ann_8k"], speech_like(3.0, 8000, speaker, seed=78), 8000)
    files["quiet"] = root / "quiet.wav"
    sf.write(files["quiet"], (1e-5 * rng.standard_normal(32000)).astype(np.float32), 16000)
    files["short"] = root / "short.wav"
    sf.write(files["short"], speech_like(0.6, 16000, random_speaker(rng), seed=5), 16000)
    files["empty"] = root / "empty.wav"
    files["empty"].write_bytes(b"")
    files["text"] = root / "notes.wav"
    files["text"].write_text("this is not audio\n" * 20)
    files["truncated"] = root / "truncated.wav"
    files["truncated"].write_bytes(files["ann0"].read_bytes()[:30])
    return files


def run(args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def enrolled(fake_model, voices, tmp_path):
    """A store with ann, bo, cy (two files each)."""
    store = tmp_path / "speakers.db"
    for name in ("ann", "bo", "cy"):
        result = run(
            [
                "enroll",
                name,
                voices[f"{name}0"],
                voices[f"{name}1"],
                "--model",
                fake_model,
                "--store",
                store,
            ]
        )
        assert result.exit_code == 0, result.output
    return store


ENROLL_KEYS = {
    "command",
    "version",
    "store",
    "model_fingerprint",
    "speaker",
    "added_utterances",
    "added_speech_seconds",
    "files",
    "replaced",
    "warnings",
}
SPEAKER_KEYS = {"name", "num_utterances", "speech_seconds", "created", "updated"}
THRESHOLD_KEYS = {
    "source",
    "value",
    "scale",
    "p_target",
    "calibration",
    "score_threshold",
    "description",
}
VERIFY_KEYS = {
    "command",
    "version",
    "mode",
    "enroll",
    "test",
    "score",
    "score_kind",
    "llr",
    "threshold",
    "decision",
    "accepted",
    "centring",
    "model_fingerprint",
    "warnings",
}
IDENTIFY_KEYS = {
    "command",
    "version",
    "test",
    "identified",
    "decision",
    "candidates",
    "num_enrolled",
    "score_kind",
    "threshold",
    "centring",
    "model_fingerprint",
    "warnings",
}
LIST_KEYS = {
    "command",
    "version",
    "store",
    "model_fingerprint",
    "embed_dim",
    "domain_mean",
    "num_speakers",
    "speakers",
}
ADAPT_KEYS = {
    "command",
    "version",
    "store",
    "source",
    "num_embeddings",
    "mean_norm",
    "model_fingerprint",
    "warnings",
}


def test_enroll_json_schema(fake_model, voices, tmp_path):
    store = tmp_path / "s.db"
    result = run(
        [
            "enroll",
            "Zoë",
            voices["ann0"],
            voices["ann_stereo"],
            "--model",
            fake_model,
            "--store",
            store,
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == ENROLL_KEYS and set(payload["speaker"]) == SPEAKER_KEYS
    assert payload["speaker"]["name"] == "Zoë" and payload["added_utterances"] == 2
    assert payload["model_fingerprint"] == FP and payload["files"][1]["sample_rate"] == 44100
    assert payload["speaker"]["speech_seconds"] == pytest.approx(
        sum(f["speech_seconds"] for f in payload["files"]), abs=1e-2
    )


def test_enroll_human_output_and_8k_warning(fake_model, voices, tmp_path):
    store = tmp_path / "s.db"
    result = run(
        ["enroll", "ann", voices["ann0"], voices["ann_8k"], "--model", fake_model, "--store", store]
    )
    assert result.exit_code == 0
    assert "enrolled 'ann'" in result.stdout and "now 2 utterance(s)" in result.stdout
    assert "warning:" in result.stderr and "8000 Hz" in result.stderr
    assert "accuracy drops" in result.stderr


def test_verify_store_mode_accepts_and_rejects(enrolled, fake_model, voices):
    base = ["--model", fake_model, "--store", enrolled]
    same = run(["verify", "ann", voices["ann2"], *base, "--threshold", "-1", "--json"])
    assert same.exit_code == 0, same.output
    payload = json.loads(same.stdout)
    assert set(payload) == VERIFY_KEYS and set(payload["threshold"]) == THRESHOLD_KEYS
    assert payload["mode"] == "store" and payload["decision"] == "accept"
    assert payload["threshold"]["source"] == "threshold" and payload["llr"] is None
    other = run(["verify", "ann", voices["bo2"], *base, "--threshold", "-1", "--json"])
    threshold = (payload["score"] + json.loads(other.stdout)["score"]) / 2
    accepted = run(["verify", "ann", voices["ann2"], *base, "--threshold", threshold])
    rejected = run(["verify", "ann", voices["bo2"], *base, "--threshold", threshold])
    assert (accepted.exit_code, rejected.exit_code) == (0, 1)
    assert "decision:  ACCEPT" in accepted.stdout and "decision:  REJECT" in rejected.stdout
    assert "--threshold: accept when cosine score >=" in rejected.stdout


def test_verify_pair_mode(fake_model, voices):
    result = run(
        [
            "verify",
            voices["ann0"],
            voices["ann1"],
            "--model",
            fake_model,
            "--threshold",
            "0.0",
            "--json",
        ]
    )
    assert result.exit_code in (0, 1)
    payload = json.loads(result.stdout)
    assert payload["mode"] == "pair" and payload["enroll"] == str(voices["ann0"])
    assert payload["accepted"] == (result.exit_code == 0) == (payload["score"] >= 0.0)


def test_verify_without_threshold_or_calibration_tells_what_to_pass(enrolled, fake_model, voices):
    result = run(["verify", "ann", voices["ann2"], "--model", fake_model, "--store", enrolled])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "--calibration FILE" in result.stderr and "--threshold" in result.stderr


def test_model_and_store_from_environment(bundled_model_files, enrolled, fake_model, voices):
    env = {"SPEAKERVERIFY_MODEL": str(fake_model), "SPEAKERVERIFY_STORE": str(enrolled)}
    result = run(["verify", "ann", voices["ann2"], "--threshold", "-1"], env=env)
    assert result.exit_code == 0, result.output
    # Without a model the bundled one is used, said once; the fake loader gives it the
    # fingerprint 0000..., which its calibration (and this store) refuse.
    bundled = run(
        ["verify", "ann", voices["ann2"], "--threshold", "-1"],
        env={"SPEAKERVERIFY_MODEL": "", "SPEAKERVERIFY_STORE": str(enrolled)},
    )
    assert bundled.exit_code == 2
    note, error = bundled.stderr.splitlines()
    assert note.startswith("using the bundled model xvector_synth (fingerprint ")
    assert error.startswith(f"error: {bundled_checkpoint().parent}") and "0000000000000000" in error


def test_identify_ranks_and_answers_unknown(enrolled, fake_model, voices):
    base = ["--model", fake_model, "--store", enrolled, "--json"]
    found = run(["identify", voices["cy2"], "--top", "2", "--threshold", "-1", *base])
    assert found.exit_code == 0, found.output
    payload = json.loads(found.stdout)
    assert set(payload) == IDENTIFY_KEYS and payload["identified"] == "cy"
    assert [c["rank"] for c in payload["candidates"]] == [1, 2]
    assert set(payload["candidates"][0]) == {"rank", "name", "score", "llr", "accepted"}
    unknown = run(["identify", voices["cy2"], "--threshold", "1.01", *base[:-1]])
    assert unknown.exit_code == 1 and "identified: unknown (of 3 enrolled)" in unknown.stdout


def test_speakers_list_remove_export(enrolled, fake_model, tmp_path):
    listed = run(["speakers", "list", "--store", enrolled, "--json"])
    payload = json.loads(listed.stdout)
    assert set(payload) == LIST_KEYS and payload["num_speakers"] == 3
    assert [s["name"] for s in payload["speakers"]] == ["ann", "bo", "cy"]
    assert all(set(s) == SPEAKER_KEYS for s in payload["speakers"])
    human = run(["speakers", "list", "--store", enrolled])
    assert "3 speaker(s)" in human.stdout and "bo" in human.stdout
    removed = run(["speakers", "remove", "bo", "--store", enrolled, "--json"])
    assert json.loads(removed.stdout)["removed"] == "bo"
    out = tmp_path / "export.json"
    exported = run(["speakers", "export", "--store", enrolled, "--out", out])
    assert exported.exit_code == 0 and "exported 2 speaker(s)" in exported.stdout
    document = json.loads(out.read_text())
    assert document["num_speakers"] == 2 and len(document["speakers"][0]["embedding"]) == 32
    assert np.linalg.norm(document["speakers"][0]["embedding"]) == pytest.approx(1.0, abs=1e-5)
    stdout_doc = json.loads(run(["speakers", "export", "--store", enrolled]).stdout)
    assert stdout_doc == document


def test_adapt_then_verify_says_centred(enrolled, fake_model, voices, tmp_path):
    domain = tmp_path / "domain"
    domain.mkdir()
    for key in ("ann2", "bo2", "cy2"):
        shutil.copy(voices[key], domain / f"{key}.wav")
    result = run(["adapt", domain, "--model", fake_model, "--store", enrolled, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == ADAPT_KEYS and payload["num_embeddings"] == 3
    verdict = run(
        [
            "verify",
            "ann",
            voices["ann2"],
            "--model",
            fake_model,
            "--store",
            enrolled,
            "--threshold",
            "-1",
        ]
    )
    assert "cosine of centred embeddings; domain mean of 3 embeddings" in verdict.stdout
    listed = json.loads(run(["speakers", "list", "--store", enrolled, "--json"]).stdout)
    assert listed["domain_mean"]["num_embeddings"] == 3


def test_adapt_from_embeddings_needs_no_model(enrolled, tmp_path):
    from speakerverify.backend.embedding_dir import save_embeddings

    vectors = np.random.default_rng(0).standard_normal((25, 32)).astype(np.float32)
    save_embeddings(
        tmp_path / "emb", [f"u{i}" for i in range(25)], vectors, {"model_fingerprint": FP}
    )
    result = run(
        ["adapt", "--embeddings", tmp_path / "emb", "--store", enrolled, "--json"],
        env={"SPEAKERVERIFY_MODEL": ""},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_embeddings"] == 25 and result.stderr == ""
    both = run(["adapt", tmp_path, "--embeddings", tmp_path / "emb", "--store", enrolled])
    assert_clean_error(both, "either AUDIO_DIR or --embeddings")


def test_export_json_summary_and_remove_json(enrolled, tmp_path):
    out = tmp_path / "e.json"
    summary = json.loads(
        run(["speakers", "export", "--store", enrolled, "--out", out, "--json"]).stdout
    )
    assert summary == {
        "command": "speakers export",
        "version": 1,
        "store": str(enrolled),
        "out": str(out),
        "num_speakers": 3,
    }
    assert set(json.loads(out.read_text())) == LIST_KEYS
    removed = json.loads(run(["speakers", "remove", "cy", "--store", enrolled, "--json"]).stdout)
    assert removed == {
        "command": "speakers remove",
        "version": 1,
        "store": str(enrolled),
        "removed": "cy",
        "num_speakers": 2,
    }


# -- bad input: one line on stderr naming the file, exit 2, store untouched -------------------


def assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert str(fragment) in result.stderr, (fragment, result.stderr)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("missing", "file not found"),
        ("empty", "empty file"),
        ("text", "not an audio file"),
        ("truncated", ""),
        ("quiet", "no speech found"),
        ("short", "need at least"),
        ("directory", "is a directory"),
    ],
)
def test_bad_audio_is_one_line_and_store_unchanged(enrolled, fake_model, voices, key, problem):
    path = {"missing": enrolled.parent / "missing.wav", "directory": enrolled.parent}.get(key)
    path = path or voices[key]
    before, rows_before = digest(enrolled), store_rows(enrolled)
    commands = [
        ["enroll", "ann", path],
        ["verify", "ann", path, "--threshold", "0"],
        ["identify", path, "--threshold", "0"],
    ]
    if key != "short":  # with ann0, a short file has enough speech in total
        commands.append(["enroll", "newbie", voices["ann0"], path])
    if key != "directory":  # pair mode: a directory as the first argument is its own case
        commands.append(["verify", path, voices["ann0"], "--threshold", "0"])
    for command in commands:
        result = run([*command, "--model", enrolled.parent / "model.pt", "--store", enrolled])
        assert_clean_error(result, Path(path).name, problem)
    assert digest(enrolled) == before and store_rows(enrolled) == rows_before


def test_unknown_speaker(enrolled, fake_model, voices):
    before = digest(enrolled)
    for command in (
        ["verify", "zed", voices["ann2"], "--threshold", "0", "--model", fake_model],
        ["speakers", "remove", "zed"],
    ):
        assert_clean_error(run([*command, "--store", enrolled]), "'zed'", enrolled)
    assert digest(enrolled) == before


def test_store_made_by_another_model(enrolled, fake_model, voices):
    other = enrolled.parent / "other.pt"
    before = digest(enrolled)
    for command in (
        ["enroll", "ann", voices["ann2"]],
        ["verify", "ann", voices["ann2"]],
        ["identify", voices["ann2"]],
    ):
        result = run(
            [*command, "--model", other, "--store", enrolled, "--threshold", "0"]
            if command[0] != "enroll"
            else [*command, "--model", other, "--store", enrolled]
        )
        assert_clean_error(result, enrolled, FP, "0000000000000000")
    assert digest(enrolled) == before


@pytest.mark.parametrize(
    "content", [b"garbage, not sqlite" * 10, b"SQLite format 3\x00" + b"\x01" * 200]
)
def test_corrupt_store_file(fake_model, voices, tmp_path, content):
    store = tmp_path / "broken.db"
    store.write_bytes(content)
    for command in (
        ["enroll", "ann", voices["ann0"], "--model", fake_model],
        ["verify", "ann", voices["ann0"], "--model", fake_model, "--threshold", "0"],
        ["identify", voices["ann0"], "--model", fake_model, "--threshold", "0"],
        ["speakers", "list"],
        ["speakers", "export"],
        ["adapt", tmp_path, "--model", fake_model],
    ):
        assert_clean_error(run([*command, "--store", store]), store)
    assert store.read_bytes() == content


def test_store_is_a_directory(fake_model, voices, tmp_path):
    result = run(["enroll", "ann", voices["ann0"], "--model", fake_model, "--store", tmp_path])
    assert_clean_error(result, tmp_path, "is a directory")


def test_checkpoint_not_ours_or_with_pickled_code(voices, tmp_path):
    """No fake here: the real loader refuses these files before building any model."""
    store = tmp_path / "s.db"
    pickled = tmp_path / "evil.pt"
    torch.save({"model": Path("/tmp")}, pickled)  # a non-tensor object: refused by weights_only
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    cases = [
        (pickled, "pickled"),
        (foreign, "not a speakerverify checkpoint"),
        (text, ""),
        (tmp_path / "none.pt", "no such checkpoint"),
        (tmp_path, "directory"),
    ]
    for checkpoint, problem in cases:
        result = run(["enroll", "ann", voices["ann0"], "--model", checkpoint, "--store", store])
        assert_clean_error(result, checkpoint, problem)
    assert not store.exists()


def test_missing_store_for_verify_and_list(fake_model, voices, tmp_path):
    missing = tmp_path / "none.db"
    assert_clean_error(run(["speakers", "list", "--store", missing]), missing, "no such")
    assert_clean_error(
        run(
            [
                "verify",
                "ann",
                voices["ann0"],
                "--store",
                missing,
                "--model",
                fake_model,
                "--threshold",
                "0",
            ]
        ),
        missing,
    )
    assert_clean_error(
        run(["speakers", "list"], env={"SPEAKERVERIFY_STORE": ""}), "SPEAKERVERIFY_STORE"
    )
    assert not missing.exists()


def test_pair_with_directory_and_bad_names(enrolled, fake_model, voices):
    before = digest(enrolled)
    pair = run(
        ["verify", enrolled.parent, voices["ann0"], "--model", fake_model, "--threshold", "0"]
    )
    assert_clean_error(pair, enrolled.parent, "is a directory")
    for name, problem in (
        ("x" * 129, "129 characters"),
        ("a\tb", "control character"),
        ("", "empty"),
    ):
        result = run(["enroll", name, voices["ann0"], "--model", fake_model, "--store", enrolled])
        assert_clean_error(result, problem)
    assert digest(enrolled) == before


# -- real processes ---------------------------------------------------------------------------


def test_help_is_fast_and_documents_exit_status():
    import resource

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([*SPEAKERVERIFY, "--help"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    assert proc.returncode == 0, proc.stderr
    assert "enroll" in proc.stdout and "verify" in proc.stdout
    # CPU time is what we control; wall time also counts the other jobs sharing the machine.
    assert cpu < 0.5, f"speakerverify --help used {cpu:.2f} s of CPU"
    assert elapsed < 5.0, f"speakerverify --help took {elapsed:.2f} s"
    verify_help = subprocess.run(
        [*SPEAKERVERIFY, "verify", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "0 accepted, 1 rejected, 2 usage or input error" in verify_help.stdout


def test_subprocess_exit_code_for_errors(tmp_path):
    store = tmp_path / "broken.db"
    store.write_bytes(b"definitely not sqlite")
    env = {**os.environ, "SPEAKERVERIFY_STORE": str(store)}
    proc = subprocess.run(
        [*SPEAKERVERIFY, "speakers", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {store}: not a speaker store (not an SQLite database)\n"


@pytest.mark.parametrize(
    "command",
    [["speakers", "list"], ["verify", "zed", "x.wav", "--model", "m.pt", "--threshold", "0"]],
)
def test_store_only_work_does_not_import_torch(enrolled, command):
    """Listing, and refusing an unknown speaker, answer before any model is loaded."""
    code = (
        "import sys; from speakerverify.cli import main\n"
        "try:\n    main(sys.argv[2:] + ['--store', sys.argv[1]])\n"
        "except SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(enrolled), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 speaker(s)" in proc.stdout or "no enrolled speaker named 'zed'" in proc.stderr


# -- a real (tiny, untrained) checkpoint, in-process and in real processes -------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny x-vector saved through the training engineer's API (random but fixed weights)."""
    from speakerverify.checkpoint import save_checkpoint
    from speakerverify.frontend.fbank_config import FbankConfig
    from speakerverify.models import build_model

    torch.manual_seed(0)
    args = {"embed_dim": 16, "channels": 32, "stats_channels": 64}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    fingerprint = save_checkpoint(
        path,
        model_name="xvector",
        model_args=args,
        model=build_model("xvector", **args),
        features=FbankConfig().to_dict(),
    )
    return path, fingerprint


def test_real_checkpoint_enroll_verify_with_calibration(checkpoint, voices, tmp_path):
    from speakerverify.backend.calibration import Calibration

    model, fingerprint = checkpoint
    store = tmp_path / "s.db"
    enrolled = run(
        [
            "enroll",
            "ann",
            voices["ann0"],
            voices["ann1"],
            "--model",
            model,
            "--store",
            store,
            "--json",
        ]
    )
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.stdout)["model_fingerprint"] == fingerprint
    calibration = tmp_path / "cal.json"
    Calibration(slope=4.0, offset=-2.0, model_fingerprint=fingerprint).save(calibration)
    argv = ["verify", "ann", voices["ann2"], "--model", model, "--store", store,
            "--calibration", calibration, "--json"]  # fmt: skip
    result = run(argv)
    payload = json.loads(result.stdout)
    assert (
        payload["threshold"]["source"] == "calibration" and payload["threshold"]["p_target"] == 0.5
    )
    assert payload["llr"] == pytest.approx(4.0 * payload["score"] - 2.0)
    assert result.exit_code == (0 if payload["llr"] >= 0 else 1)
    # The same file twice gives the same score: no randomness at inference.
    again = json.loads(run(argv).stdout)
    assert again["score"] == payload["score"]


def test_real_processes_exit_codes(checkpoint, voices, tmp_path):
    model, _ = checkpoint
    store = tmp_path / "s.db"
    env = {**os.environ, "SPEAKERVERIFY_MODEL": str(model), "SPEAKERVERIFY_STORE": str(store)}

    def speakerverify(*args):
        return subprocess.run(
            [*SPEAKERVERIFY, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
        )

    enrolled = run(["enroll", "ann", voices["ann0"], voices["ann1"]], env=env)
    assert enrolled.exit_code == 0, enrolled.output
    accepted = speakerverify("verify", "ann", voices["ann2"], "--threshold", "-1")
    rejected = speakerverify("verify", "ann", voices["ann2"], "--threshold", "1.01")
    broken = speakerverify("verify", "ann", voices["text"], "--threshold", "0")
    assert (accepted.returncode, rejected.returncode, broken.returncode) == (0, 1, 2)
    assert "decision:  ACCEPT" in accepted.stdout and "decision:  REJECT" in rejected.stdout
    assert broken.stderr.startswith(f"error: {voices['text']}: ") and broken.stdout == ""
    assert "Traceback" not in broken.stderr and broken.stderr.count("\n") == 1


KILL_IN_TRANSACTION = """
import os, signal, sys
from speakerverify.cli import main
from speakerverify.speakers.store import SpeakerStore
SpeakerStore.before_commit = staticmethod(lambda: os.kill(os.getpid(), signal.SIGKILL))
main(sys.argv[1:])
"""


def test_enroll_killed_inside_its_transaction_leaves_store_as_before(checkpoint, voices, tmp_path):
    model, _ = checkpoint
    store = tmp_path / "s.db"
    assert (
        run(
            [
                "enroll",
                "ann",
                voices["ann0"],
                "--model",
                model,
                "--store",
                store,
                "--min-speech",
                "1",
            ]
        ).exit_code
        == 0
    )
    before = store_rows(store)
    for name in ("ann", "bo"):  # an update of an existing speaker, and a new one
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                KILL_IN_TRANSACTION,
                "enroll",
                name,
                str(voices["bo0"]),
                str(voices["bo1"]),
                "--model",
                str(model),
                "--store",
                str(store),
            ],
            capture_output=True,
            timeout=300,
        )
        assert proc.returncode == -9, proc.stderr
        assert store_rows(store) == before
    listed = json.loads(run(["speakers", "list", "--store", store, "--json"]).stdout)
    assert [(s["name"], s["num_utterances"]) for s in listed["speakers"]] == [("ann", 1)]
