"""chorus: learn music labels from a crowd.

The library is plain functions and small classes, free of Prefect, so each piece can be used
from a notebook or tested directly. Prefect tasks (``tasks/``) and flows (``flows/``) wrap it.
"""

__version__ = "0.1.0"

MOODS: tuple[str, ...] = (
    "moving",
    "loneliness",
    "quiet",
    "warmth",
    "romance",
    "healing",
    "sadness",
    "missing",
    "passion",
    "joy",
    "lovelorn",
    "nostalgia",
)
"""The article's 12-mood vocabulary, in its order; label vectors use this order."""
