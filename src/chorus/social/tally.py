"""What voting needs from the validated social tables: the follow graph, the users' tag matrix,
the users, and every social reject (the tables' rejects plus the follows the graph refused). The
labels stage votes with it; the personal stage fits listeners' heads on the same tally."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from chorus.io import read_table
from chorus.social.graph import GraphBuild, build_graph
from chorus.social.rejects import social_rejects
from chorus.social.tags import TagMapper
from chorus.social.voting import TagMatrix, tag_matrix, user_song_votes


def read_social_tables(paths: dict[str, Path]) -> dict[str, pd.DataFrame]:
    tables = {name: read_table(p) for name, p in paths.items()}
    tables["playlists"]["tags"] = tables["playlists"]["tags"].map(list)
    return tables


def all_rejects(rejects: pd.DataFrame, built: GraphBuild) -> pd.DataFrame:
    """The social rejects plus the follows the graph refused."""
    follows = pd.DataFrame({"table": "follows",
                            "key": built.rejects["follower"].astype(str) + "->" + built.rejects["followee"].astype(str),
                            "reason": built.rejects["reason"], "detail": ""})
    return pd.concat([rejects, follows], ignore_index=True)


@dataclass(frozen=True)
class VoteTally:
    """What voting needs from the social tables, and what it counts of them."""
    built: GraphBuild
    tags: TagMatrix
    users: pd.DataFrame
    rejects: pd.DataFrame  # the social rejects plus the follows the graph refused
    counts: dict[str, Any]  # user_song_pairs, playlists_without_mood, discarded_tags


def tally_votes(paths: dict[str, Path], known_tracks: set[str], synonyms_file: Path | None = None) -> VoteTally:
    """The follow graph and the users' tag matrix from the social tables. The playlists and their
    memberships, the largest inputs, are dropped on return, before the truths are computed.

    Parameters
    ----------
    paths : dict[str, Path]
        The validated social tables by name (users, follows, playlists, playlist_tracks).
    known_tracks : set[str]
        The corpus's track ids; memberships of other tracks are rejected.
    synonyms_file : Path or None
        A tag-synonyms YAML (None: the bundled one).
    """
    tables, rejects = social_rejects(read_social_tables(paths), known_tracks)
    built = build_graph(tables["users"], tables["follows"])
    votes = user_song_votes(tables["playlists"], tables["playlist_tracks"], TagMapper.load(synonyms_file))
    counts = {"user_song_pairs": len(votes.user), "playlists_without_mood": votes.playlists_without_mood,
              "discarded_tags": dict(votes.discarded_tags.most_common())}
    return VoteTally(built, tag_matrix(votes, built.graph), tables["users"], all_rejects(rejects, built), counts)
