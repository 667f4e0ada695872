"""Great Expectations suites: for each rule, a table that breaks it fails naming that expectation."""

from __future__ import annotations

import pandas as pd
import pytest

from chorus import MOODS
from chorus.errors import ValidationFailedError
from chorus.social.voting import SCORE_COLUMNS
from chorus.validation import SUITES, Validator, _escaped, columns_read


@pytest.fixture(scope="module")
def validator(tmp_path_factory):
    return Validator(tmp_path_factory.mktemp("docs"))


def good_tables() -> dict[str, pd.DataFrame]:
    tracks = pd.DataFrame({
        "track_id": ["0123456789abcdef", "fedcba9876543210"], "uri": ["/a.wav", "/b.wav"],
        "duration_s": [10.0, 12.0], "sample_rate": [22050, 44100], "channels": [1, 2],
        "codec": ["WAV/PCM_16"] * 2, "source": ["demo"] * 2, "split": ["train", "test"],
    })
    labels = pd.DataFrame({"scope": ["global"] * 2, "track_id": ["a", "b"], **{f"score_{m}": [0.5, 0.0] for m in MOODS}})
    return {
        "tracks": tracks,
        "users": pd.DataFrame({"user_id": ["u1", "u2"]}),
        "follows": pd.DataFrame({"follower": ["u1"], "followee": ["u2"]}),
        "playlists": pd.DataFrame({"playlist_id": ["p1", "p2"], "owner": ["u1", "u2"], "tags": [["calm"], ["rock"]]}),
        "playlist_tracks": pd.DataFrame({"playlist_id": ["p1", "p1"], "track_id": ["a", "b"]}),
        "labels": labels,
    }


def _set(column, index, value):
    def mutate(df):
        df = df.copy()
        df[column] = df[column].astype(object)
        df.loc[index, column] = value
        return df
    return mutate


def _drop(column):
    return lambda df: df.drop(columns=[column])


def _dup_row(df):
    return pd.concat([df, df.iloc[[0]]], ignore_index=True)


CASES = [
    ("tracks", _drop("codec"), "expect_table_columns_to_match_set"),
    ("tracks", _set("track_id", 1, None), "expect_column_values_to_not_be_null(track_id)"),
    ("tracks", _set("track_id", 1, "0123456789abcdef"), "expect_column_values_to_be_unique(track_id)"),
    ("tracks", _set("track_id", 1, "NOT-A-HASH"), "expect_column_values_to_match_regex(track_id)"),
    ("tracks", _set("uri", 1, None), "expect_column_values_to_not_be_null(uri)"),
    ("tracks", _set("uri", 1, "/a.wav"), "expect_column_values_to_be_unique(uri)"),
    ("tracks", _set("duration_s", 1, 0.5), "expect_column_values_to_be_between(duration_s)"),
    ("tracks", _set("sample_rate", 1, 100), "expect_column_values_to_be_between(sample_rate)"),
    ("tracks", _set("channels", 1, 0), "expect_column_values_to_be_between(channels)"),
    ("tracks", _set("split", 1, "holdout"), "expect_column_values_to_be_in_set(split)"),
    ("users", _drop("user_id"), "expect_column_to_exist(user_id)"),
    ("users", _set("user_id", 1, None), "expect_column_values_to_not_be_null(user_id)"),
    ("users", _set("user_id", 1, "u1"), "expect_column_values_to_be_unique(user_id)"),
    ("follows", _drop("followee"), "expect_column_to_exist(followee)"),
    ("follows", _set("follower", 0, None), "expect_column_values_to_not_be_null(follower)"),
    ("follows", _set("followee", 0, None), "expect_column_values_to_not_be_null(followee)"),
    ("playlists", _drop("tags"), "expect_column_to_exist(tags)"),
    ("playlists", _set("playlist_id", 1, None), "expect_column_values_to_not_be_null(playlist_id)"),
    ("playlists", _set("playlist_id", 1, "p1"), "expect_column_values_to_be_unique(playlist_id)"),
    ("playlists", _set("owner", 1, None), "expect_column_values_to_not_be_null(owner)"),
    ("playlist_tracks", _set("track_id", 1, None), "expect_column_values_to_not_be_null(track_id)"),
    ("playlist_tracks", _dup_row, "expect_compound_columns_to_be_unique(['playlist_id', 'track_id'])"),
    ("labels", _set("score_joy", 0, 1.5), "expect_column_values_to_be_between(score_joy)"),
    ("labels", _dup_row, "expect_compound_columns_to_be_unique(['scope', 'track_id'])"),
]


@pytest.mark.parametrize("table", sorted(good_tables()))
def test_good_tables_pass(validator, table):
    assert validator.validate(good_tables()[table], table)["table"] == table


@pytest.mark.parametrize(("table", "mutate", "expected"), CASES, ids=[f"{t}:{e}" for t, _, e in CASES])
def test_broken_rule_is_named(validator, table, mutate, expected):
    with pytest.raises(ValidationFailedError) as info:
        validator.validate(mutate(good_tables()[table]), table, {"min_duration_s": 3.0})
    message = str(info.value)
    assert f"table '{table}' failed validation" in message
    assert expected in message


def test_failure_shows_example_rows_and_docs(validator):
    with pytest.raises(ValidationFailedError) as info:
        validator.validate(_set("split", 1, "holdout")(good_tables()["tracks"]), "tracks")
    assert "holdout" in str(info.value)
    assert info.value.docs and info.value.docs.endswith("index.html")


def test_batched_validations_reach_data_docs_when_built(tmp_path):
    """update_docs=False defers rendering; build_docs renders those results (and only those)."""
    validator = Validator(tmp_path / "docs")
    pages = lambda: sorted(p.relative_to(tmp_path) for p in (tmp_path / "docs" / "validations").rglob("*.html"))  # noqa: E731
    users = good_tables()["users"]
    validator.validate(users, "users", update_docs=False)
    validator.validate(users, "users", update_docs=False)
    assert not (tmp_path / "docs" / "validations").exists()
    validator.build_docs()
    first = pages()
    assert len(first) == 2 and (tmp_path / "docs" / "index.html").exists()
    rendered = {p: (tmp_path / p).stat().st_mtime_ns for p in first}
    validator.build_docs()  # nothing new: nothing re-rendered
    validator.validate(users, "users", update_docs=False)
    validator.build_docs()  # the new result only
    assert len(pages()) == 3
    assert {p: (tmp_path / p).stat().st_mtime_ns for p in first} == rendered


def _segment_checks(track_ids):
    from chorus.config import FeatureSettings
    from chorus.features import segment_check_params
    from chorus.validation import with_known_tracks

    settings = FeatureSettings(hpss=False)
    rows = pd.DataFrame({"track_id": ["a", "a", "b"], "segment": [0, 1, 0], "finite": True,
                         "min_db": -100.0, "max_db": 20.0,
                         "size_logmel": settings.n_mels * settings.segment_frames, "size_mfcc_stats": 6 * settings.n_mfcc})
    return with_known_tracks(rows, track_ids), segment_check_params(settings, track_ids)


@pytest.mark.parametrize("extracted,expected", [
    (["a", "b"], None),
    (["a"], "expect_column_values_to_be_in_set(known_track): 1 unexpected"),  # rows of a track it did not extract
    (["a", "b", "c"], "expect_column_unique_value_count_to_be_between(track_id): observed 2"),  # one is missing
])
def test_feature_shard_holds_exactly_its_extracted_tracks(validator, extracted, expected):
    checks, params = _segment_checks(extracted)
    if expected is None:
        assert validator.validate(checks, "feature_segments", params)["expectations"] >= 10
        return
    with pytest.raises(ValidationFailedError) as failure:
        validator.validate(checks, "feature_segments", params)
    assert expected in str(failure.value)


def test_gx_is_handed_the_columns_a_suite_reads_and_keeps_no_table_after_a_run(validator):
    import great_expectations.expectations as gxe

    assert columns_read(SUITES["labels"](gxe, {})) == {"scope", "track_id", *SCORE_COLUMNS}
    assert columns_read(SUITES["tracks"](gxe, {})) is None  # it checks the column set: every column
    labels = good_tables()["labels"].assign(labels=[["calm"], []], weight=[2.0, 1.0], fallback="")
    assert validator.validate(labels, "labels")["rows"] == 2
    # a long-lived process (chorus serve) does not carry the last table it validated
    assert validator.source.get_execution_engine().batch_manager.batch_data_cache == {}


def test_string_columns_are_escaped_as_html_escape_escapes_each_value():
    import html

    values = ["a&b<c>\"d'e", "&amp;", "plain", "<<>>&&", "", None]
    escaped = _escaped(pd.Series(values, dtype="str")).tolist()
    assert escaped[:-1] == [html.escape(v) for v in values[:-1]]
    assert pd.isna(escaped[-1])
