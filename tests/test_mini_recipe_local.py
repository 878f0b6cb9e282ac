"""recipes/mini/local helpers behind the bundled calibration's operating point: speaker attributes
from the corpus's speakers.tsv, and same-gender impostor trials made from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTRIBUTES = ROOT / "recipes" / "mini" / "local" / "speaker_attributes.py"


def write_data_dir(path: Path, speakers: dict[str, int]) -> None:
    path.mkdir(parents=True)
    wav, utt2spk = [], []
    for spk, count in speakers.items():
        for i in range(count):
            utt = f"{spk}/s{i % 2}/{i:05d}"
            wav.append(f"{utt} /nowhere/{utt}.wav")
            utt2spk.append(f"{utt} {spk}")
    (path / "wav.scp").write_text("\n".join(wav) + "\n")
    (path / "utt2spk").write_text("\n".join(utt2spk) + "\n")


def test_attributes_feed_same_gender_trials(tmp_path):
    tsv = tmp_path / "speakers.tsv"
    tsv.write_text(
        "spk_id\tsplit\tgender\tpitch_hz\tformant_scale\tlanguage\tklatt\n"
        "id1\tdev\tfemale\t1-2\t1\tde\t0\nid2\tdev\tfemale\t1-2\t1\tfr\t0\n"
        "id3\tdev\tmale\t1-2\t1\tde\t0\nid4\tdev\tmale\t1-2\t1\tes\t0\nid5\tdev\tmale\t1\t1\tx\t0\n"
    )
    data = tmp_path / "data"
    write_data_dir(data, {"id1": 4, "id2": 4, "id3": 4, "id4": 4})
    done = subprocess.run(
        [sys.executable, ATTRIBUTES, data, tsv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (data / "spk2gender").read_text().split("\n")[:4] == [
        "id1 female", "id2 female", "id3 male", "id4 male"
    ]  # fmt: skip
    assert (
        "id1 de" in (data / "spk2lang").read_text() and "id5" not in (data / "spk2lang").read_text()
    )
    from click.testing import CliRunner

    from speakerverify.cli import main

    trials = tmp_path / "trials.txt"
    result = CliRunner().invoke(
        main,
        ["prepare", "trials", str(data), str(trials), "--same", "gender", "--num-targets", "4",
         "--num-nontargets", "20", "--any-session"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    gender = dict(line.split() for line in (data / "spk2gender").read_text().splitlines())
    nontargets = [line.split() for line in trials.read_text().splitlines() if line[0] == "0"]
    assert len(nontargets) == 20
    assert all(gender[a.split("/")[0]] == gender[b.split("/")[0]] for _, a, b in nontargets)


def test_generator_attribute_keeps_impostors_within_one_synthesiser(tmp_path):
    # an eSpeak table (its corpus.json names no generator) and a Kokoro one: the calibration's
    # non-targets pair speakers of one gender made by one synthesiser
    espeak, kokoro = tmp_path / "corpus", tmp_path / "kokoro_corpus"
    espeak.mkdir()
    kokoro.mkdir()
    (espeak / "corpus.json").write_text('{"seed": 0}')
    (kokoro / "corpus.json").write_text('{"generator": "kokoro", "seed": 0}')
    header = "spk_id\tsplit\tgender\tlanguage\n"
    (espeak / "speakers.tsv").write_text(header + "id1\tdev\tfemale\tja\nid2\tdev\tfemale\tde\n")
    (kokoro / "speakers.tsv").write_text(
        header + "id20000\tdev\tfemale\tja\nid20001\tdev\tfemale\tja\n"
    )
    data = tmp_path / "data"
    write_data_dir(data, {"id1": 4, "id2": 4, "id20000": 4, "id20001": 4})
    tables = [espeak / "speakers.tsv", kokoro / "speakers.tsv"]
    done = subprocess.run(
        [sys.executable, ATTRIBUTES, data, *tables], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    generator = dict(line.split() for line in (data / "spk2generator").read_text().splitlines())
    assert generator == {"id1": "espeak", "id2": "espeak", "id20000": "kokoro", "id20001": "kokoro"}
    from click.testing import CliRunner

    from speakerverify.cli import main

    trials = tmp_path / "trials.txt"
    result = CliRunner().invoke(
        main,
        ["prepare", "trials", str(data), str(trials), "--same", "gender", "--same", "generator",
         "--all", "--any-session"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    nontargets = [line.split() for line in trials.read_text().splitlines() if line[0] == "0"]
    # 2 pairs of speakers within a synthesiser, 4 x 4 utterances each; id1 and id20000 share a
    # gender and a language but not a synthesiser
    pairs = {tuple(sorted((a.split("/")[0], b.split("/")[0]))) for _, a, b in nontargets}
    assert pairs == {("id1", "id2"), ("id20000", "id20001")} and len(nontargets) == 2 * 16


def test_attributes_name_a_speaker_missing_from_the_table(tmp_path):
    tsv = tmp_path / "speakers.tsv"
    tsv.write_text("spk_id\tsplit\tgender\tlanguage\nid1\tdev\tfemale\tde\n")
    write_data_dir(tmp_path / "data", {"id1": 2, "id9": 2})
    done = subprocess.run(
        [sys.executable, ATTRIBUTES, tmp_path / "data", tsv], capture_output=True, text=True
    )
    assert done.returncode == 2 and "no row for id9" in done.stderr
    assert not (tmp_path / "data" / "spk2gender").exists()


def test_report_lists_each_hard_list_it_finds(tmp_path):
    import json

    exp = tmp_path / "exp" / "xvector_mini"
    eers = {"mfcc": 0.1, "untrained": 0.2, "final": 0.05}
    for system, eer in eers.items():
        (exp / system).mkdir(parents=True)
        for variant, scale in [("scores", 1), ("scores_centred", 0.5), ("scores_same_gender", 2)]:
            metrics = {"eer": eer * scale, "min_dcf_0.01": 0.5, "min_dcf_0.05": 0.25,
                       "num_trials": 10, "num_targets": 5}  # fmt: skip
            (exp / system / f"{variant}.json").write_text(json.dumps(metrics))
    report = ROOT / "recipes" / "mini" / "local" / "report.py"

    def run() -> list[str]:
        done = subprocess.run([sys.executable, report, exp], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    lines = run()
    assert "| trained encoder (triplet) | yes | 2.50 | 0.500 | 0.250 |" in lines
    assert lines[-1].startswith("Same-gender non-targets (raw): MFCC mean/std + cosine 20.00 %")
    assert not any("same-language" in line for line in lines)  # a run made before that list
    for system, eer in eers.items():
        metrics = {"eer": eer * 3, "num_trials": 10, "num_targets": 5}
        (exp / system / "scores_same_lang_gender.json").write_text(json.dumps(metrics))
    assert run()[-1] == (
        "Same-gender, same-language non-targets (raw): MFCC mean/std + cosine 30.00 %, "
        "untrained encoder 60.00 %, trained encoder (triplet) 15.00 % EER."
    )
