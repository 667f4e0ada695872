"""Finding a song by its tune: the melody line, the key- and tempo-free alignment, the index and
its approximate stage, the humming synthesiser, and basic-pitch's note model on sung audio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chorus.config import MelodySettings
from chorus.evaluation.melody import random_ranking, rank_metrics
from chorus.melody.align import align
from chorus.melody.index import MelodyIndex
from chorus.melody.line import Melody, melody_line, upper_voice
from chorus.melody.synth import LEVELS, hum_query, random_tune, render_voice, sung_melody


def random_melody(rng: np.random.Generator, notes: int = 40) -> Melody:
    return random_tune(rng, notes)


def test_intervals_and_rhythm_do_not_depend_on_key_or_tempo():
    tune = random_melody(np.random.default_rng(0))
    sung = Melody(tune.onset_s * 1.3 + 0.7, tune.duration_s * 1.3, tune.pitch - 5)
    assert np.allclose(tune.intervals(), sung.intervals())
    assert np.allclose(tune.log_ioi_ratios(), sung.log_ioi_ratios())


def test_alignment_finds_a_transposed_slower_excerpt_where_it_starts():
    tune = random_melody(np.random.default_rng(1))
    excerpt = tune.excerpt(12, 24)
    sung = Melody((excerpt.onset_s - excerpt.onset_s[0]) * 1.25, excerpt.duration_s * 1.25, excerpt.pitch + 4)
    cost, start = align(sung, tune)
    assert cost < 1e-9 and start == 12
    other = random_melody(np.random.default_rng(2))
    assert align(sung, other)[0] > 0.2


def test_alignment_finds_an_excerpt_whose_typical_note_is_not_the_songs():
    # a song of long notes with a run of short ones: the sung run's median note is a third of the song's
    lengths = np.r_[np.full(20, 0.75), np.full(12, 0.25), np.full(10, 0.75)]
    pitch = 60 + np.r_[0, np.cumsum(np.random.default_rng(6).choice([-3, -2, -1, 1, 2, 4], 41))].astype(float)
    song = Melody(np.r_[0, np.cumsum(lengths[:-1])], lengths, pitch)
    run = song.excerpt(20, 32)
    sung = Melody((run.onset_s - run.onset_s[0]) * 1.2, run.duration_s * 1.2, run.pitch - 3)
    cost, start = align(sung, song)
    assert start == 20 and cost < 1e-9


def test_alignment_steps_over_a_spurious_note_and_a_wrong_one():
    tune = random_melody(np.random.default_rng(3))
    sung = tune.excerpt(5, 20)
    # the catalogue's transcription has a spurious note between notes 10 and 11
    spurious = Melody(np.insert(tune.onset_s, 11, tune.onset_s[10] + 0.05), np.insert(tune.duration_s, 11, 0.05),
                      np.insert(tune.pitch, 11, tune.pitch[10] + 9))
    cost, start = align(sung, spurious)
    assert start == 5 and cost < 0.05
    wrong = Melody(sung.onset_s, sung.duration_s, sung.pitch + np.where(np.arange(len(sung)) == 7, 2, 0))
    assert align(wrong, tune)[1] == 5 and align(wrong, tune)[0] < 0.15


def test_melody_line_takes_the_top_voice_not_its_overtones_and_merges_repeats():
    notes = pd.DataFrame({
        "onset_s": [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.5],
        "offset_s": [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.5, 3.0],
        "pitch": [48, 55, 64, 76, 50, 65, 67, 67],  # 76: the octave partial of 64, weaker than it
        "amplitude": [0.6, 0.6, 0.7, 0.5, 0.6, 0.7, 0.8, 0.8],
    })
    line = melody_line(notes)
    assert line["pitch"].tolist() == [64, 65, 67]  # the two 67s are one sung note
    assert line["offset_s"].iloc[-1] == 3.0


def test_melody_line_drops_loud_organ_partials_and_keeps_a_note_under_a_legato_hold_over():
    notes = pd.DataFrame({
        # an organ chord whose octave (76) and twelfth (83) partials of 64 are transcribed louder than it;
        # then 67 held 0.08 s into 64 (legato), and 69 sounding on above 60 (a chord: 69 is the melody)
        "onset_s": [0.0, 0.0, 0.0, 0.0, 1.0, 1.92, 3.0, 3.0],
        "offset_s": [1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 4.0],
        "pitch": [53, 64, 76, 83, 67, 64, 60, 69],
        "amplitude": [0.5, 0.5, 0.6, 0.55, 0.7, 0.7, 0.7, 0.6],
    })
    assert melody_line(notes)["pitch"].tolist() == [64, 67, 64, 69]
    louder = notes.assign(amplitude=np.where(notes["pitch"] == 76, 0.9, notes["amplitude"]))  # beyond the margin
    assert melody_line(louder)["pitch"].tolist()[0] == 76


def test_a_catalogue_line_leaves_out_an_inner_voice_note_where_the_top_one_was_missed():
    # a soprano line whose fourth note the transcriber missed: the skyline fell to the alto's 60
    line = pd.DataFrame({"onset_s": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], "offset_s": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5],
                         "pitch": [72, 74, 76, 60, 77, 76, 74], "amplitude": [0.6] * 7})
    kept = upper_voice(line)
    assert kept["pitch"].tolist() == [72, 74, 76, 77, 76, 74]
    leap = line.assign(pitch=[72, 74, 76, 69, 71, 67, 65])  # a leap down a seventh is the tune, not an inner voice
    assert upper_voice(leap)["pitch"].tolist() == [72, 74, 76, 69, 71, 67, 65]


def test_the_index_finds_a_sung_excerpt_among_many_tunes_exactly_and_approximately(tmp_path):
    rng = np.random.default_rng(4)
    tunes = {f"t{i:03d}": random_melody(rng) for i in range(400)}
    query_rng = np.random.default_rng(5)
    sung, _, _ = sung_melody(tunes["t123"], 10, 26, LEVELS["wrong10"], query_rng)
    exact = MelodyIndex(tunes, MelodySettings())  # below exhaustive_below: every tune aligned
    approximate = MelodyIndex(tunes, MelodySettings(exhaustive_below=0, shortlist=20))
    for index in (exact, approximate):
        best = index.search(sung, k=5)[0]
        assert best.track_id == "t123" and abs(best.offset_s - tunes["t123"].onset_s[10]) < 1e-9
    approximate.save(tmp_path / "melody", {"key": "k"})
    loaded = MelodyIndex.load(tmp_path / "melody")
    assert loaded.search(sung, k=1)[0].track_id == "t123" and loaded.settings.exhaustive_below == 0


def test_random_ranking_is_exact():
    exact = random_ranking(np.array([1, 3]), 50)
    rng = np.random.default_rng(0)
    draws = {"top1": [], "top10": [], "mrr": []}
    for relevant in (1, 3):
        for _ in range(20000):
            first = rng.choice(50, relevant, replace=False).min()
            draws["top1"].append(first == 0)
            draws["top10"].append(first < 10)
            draws["mrr"].append(1 / (first + 1))
    for key, values in draws.items():
        assert abs(exact[key] - np.mean(values)) < 0.01, key
    table = rank_metrics(np.array([0, 0, 3, 20]), 200, 0)
    assert table["top1"]["mean"] == 0.5 and table["top10"]["mean"] == 0.75


@pytest.fixture(scope="module")
def transcriber():
    from chorus.melody.transcribe import NoteTranscriber

    return NoteTranscriber.shared()


def test_basic_pitch_transcribes_a_hummed_tune_note_for_note(transcriber):
    """The pinned note model, run on a synthetic hum: the melody line's intervals are the tune's."""
    rng = np.random.default_rng(6)
    tune = random_melody(rng, notes=14)
    sung, transpose, _ = sung_melody(tune, 0, len(tune), LEVELS["clean"], rng)
    heard = Melody.from_notes(melody_line(transcriber.notes(render_voice(sung, rng))))
    cost, start = align(heard, Melody(sung.onset_s, sung.duration_s, np.round(sung.pitch)))
    assert abs(len(heard) - len(sung)) <= 2 and cost < 0.1 and start <= 1


def test_a_hum_query_is_an_excerpt_of_8_to_20_seconds_sung_with_its_distortions():
    tune = random_melody(np.random.default_rng(7), notes=120)
    query = hum_query(tune, "t", LEVELS["sloppy"], np.random.default_rng(8))
    assert query is not None and 8.0 <= len(query.audio) / 22050 <= 22.0
    assert -7 <= query.transpose <= 7 and 0.75 <= query.tempo <= 1.3
    assert np.abs(query.audio).max() <= 0.5 + 1e-6
    assert hum_query(random_melody(np.random.default_rng(9), notes=5), "t", LEVELS["clean"], np.random.default_rng(1)) is None


def test_the_model_is_read_from_the_pinned_wheel_and_refused_when_it_differs(tmp_path):
    import shutil
    import zipfile

    from chorus.errors import InputError
    from chorus.melody.transcribe import BASIC_PITCH_WHEEL, _model_bytes
    from chorus.pretrained.weights import default_wheel_dir

    assert len(_model_bytes()) > 100_000
    planted = tmp_path / BASIC_PITCH_WHEEL.filename
    shutil.copy(default_wheel_dir() / BASIC_PITCH_WHEEL.filename, planted)
    with zipfile.ZipFile(planted, "a") as archive:
        archive.writestr("extra.txt", "changed")
    with pytest.raises(InputError, match="SHA-256"):
        _model_bytes(tmp_path)
