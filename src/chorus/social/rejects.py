"""Referential checks across the social tables, before voting."""

from __future__ import annotations

import pandas as pd


def social_rejects(tables: dict[str, pd.DataFrame], known_tracks: set[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Referential checks across the social tables: a playlist whose owner is unknown, a
    playlist_tracks row naming an unknown playlist or track, go to rejects with the reason (follows
    are checked by build_graph). Empty playlists are fine."""
    users = set(tables["users"]["user_id"].astype(str))
    playlists, members = tables["playlists"], tables["playlist_tracks"]
    rejects = []
    bad_owner = ~playlists["owner"].astype(str).isin(users)
    rejects.append(pd.DataFrame({"table": "playlists", "key": playlists.loc[bad_owner, "playlist_id"].astype(str),
                                 "reason": "unknown owner", "detail": playlists.loc[bad_owner, "owner"].astype(str)}))
    kept_playlists = playlists[~bad_owner]
    playlist_ids = set(kept_playlists["playlist_id"].astype(str))
    bad_playlist = ~members["playlist_id"].astype(str).isin(playlist_ids)
    bad_track = ~members["track_id"].astype(str).isin(known_tracks)
    for mask, reason in ((bad_playlist, "unknown or rejected playlist"), (bad_track & ~bad_playlist, "unknown track")):
        rejects.append(pd.DataFrame({"table": "playlist_tracks",
                                     "key": members.loc[mask, "playlist_id"].astype(str) + "/" + members.loc[mask, "track_id"].astype(str),
                                     "reason": reason, "detail": ""}))
    kept = {**tables, "playlists": kept_playlists.reset_index(drop=True),
            "playlist_tracks": members[~bad_playlist & ~bad_track].reset_index(drop=True)}
    return kept, pd.concat(rejects, ignore_index=True)
