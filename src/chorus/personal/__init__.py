"""Personalised mood models: how each listener (or group of listeners) hears a song's audio,
trained on personal truth (docs/method.md, "Personalised classification")."""

from chorus.personal.model import Level, PersonalMoodModel, fit_personal_model

__all__ = ["Level", "PersonalMoodModel", "fit_personal_model"]
