"""chorus: learn music labels from a crowd.

The library is plain functions and small classes, free of Prefect, so each piece can be used
from a notebook or tested directly. Prefect tasks (``tasks/``) and flows (``flows/``) wrap it.
"""

__version__ = "0.1.0"
DISTRIBUTION = "chorus-crowd-labels"  # the name to install by (pyproject.toml); the import package is chorus

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
