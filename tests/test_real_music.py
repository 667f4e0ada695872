"""The real-music tier: a corpus of our own from Debian packages that ship music (Ogg Vorbis and
MP3 game scores and songs, folder per package), built once and cached (chorus_bench.real_music)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from chorus.audio import load_mono
from chorus.config import FeatureSettings, IngestSettings
from chorus.datasets.adapters import candidates_for
from chorus.features import FeatureExtractor
from chorus.ingest import ingest
from chorus.reference import naive_feature_maps
from chorus_bench.real_music import DEFAULT_CACHE, PACKAGES, build_corpus

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(DEFAULT_CACHE)


def test_the_corpus_keeps_its_licences_and_a_folder_per_package(corpus):
    assert sorted(p.name for p in corpus.iterdir()) == sorted(p.name for p in PACKAGES)
    licences = corpus.parent / "LICENSES"
    assert all((licences / f"{p.name}.copyright").stat().st_size > 0 for p in PACKAGES)


def test_real_ogg_and_mp3_files_that_play_to_the_end_are_all_ingested(corpus):
    """Every file of the corpus plays to the end: none is quarantined. The MP3s decode short of
    their header's estimate, and the shortfall is recorded."""
    result = ingest(candidates_for(corpus), IngestSettings())
    assert result.quarantine.empty, result.quarantine[["uri", "reason", "detail"]].to_string()
    assert set(result.tracks["label"]) == {p.name for p in PACKAGES}
    mp3 = result.tracks[result.tracks["codec"].str.startswith("MP3")]
    assert len(mp3) == 3 and (mp3["frames_short"] > 0).all()
    assert (result.tracks.loc[result.tracks["codec"] == "OGG/VORBIS", "duration_s"] > 5).all()


def test_features_of_real_music_equal_the_naive_librosa_chain(corpus):
    """On a real recording, not only on rendered tones: the stored maps match the pinned naive
    chain within the benchmark's 0.01 dB."""
    track = min((p for p in (corpus / "drascula-music").iterdir()), key=lambda p: sf.info(p).frames)
    settings = FeatureSettings()
    ours = FeatureExtractor(settings).analyse(load_mono(str(track), settings.sample_rate))
    naive = naive_feature_maps(str(track), settings)
    for name in ("logmel", "harmonic", "percussive"):
        assert ours[name].shape == naive[name].shape
        assert np.abs(ours[name] - np.maximum(naive[name], settings.db_floor)).max() <= 0.01, name


def test_real_recordings_are_transcribed_indexed_and_found_by_a_sung_excerpt(corpus):
    """Real game scores and songs (Ogg Vorbis, MP3) through basic-pitch's note model into the
    melody index; a sung excerpt from the middle of a track's transcribed melody, transposed, at
    another tempo, with 10% wrong notes, finds its track. No real track has a score, so the tune
    sung is the transcriber's own reading: this checks decoding, transcription and matching on
    real recordings and the singer's distortions, not the transcription's accuracy (the demo's
    report measures that against scores)."""
    from chorus.melody.index import MelodyIndex
    from chorus.melody.line import Melody, catalogue_line, melody_line
    from chorus.melody.synth import LEVELS, render_voice, sung_melody
    from chorus.melody.transcribe import SAMPLE_RATE, NoteTranscriber

    transcriber = NoteTranscriber.shared()
    files = sorted(p for p in corpus.rglob("*") if p.suffix in (".ogg", ".mp3"))[:16]
    melodies = {}
    for path in files:
        audio = load_mono(path, SAMPLE_RATE)[: 45 * SAMPLE_RATE]
        melodies[path.name] = Melody.from_notes(catalogue_line(transcriber.notes(audio)))  # as the melody stage stores it
    assert sum(len(m) >= 30 for m in melodies.values()) >= 10  # real music gives melodies
    index = MelodyIndex(melodies)
    rng = np.random.default_rng(0)
    sung_tracks = [name for name, m in sorted(melodies.items()) if len(m) >= 30][:8]
    found = 0
    for name in sung_tracks:
        tune = melodies[name]
        start = len(tune) // 3
        sung, _, _ = sung_melody(tune, start, start + 14, LEVELS["wrong10"], rng)
        heard = Melody.from_notes(melody_line(transcriber.notes(render_voice(sung, rng))))
        found += index.search(heard, k=1)[0].track_id == name
    assert found >= 0.75 * len(sung_tracks)
