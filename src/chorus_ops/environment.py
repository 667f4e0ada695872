"""The environment variables that configure chorus's processes: the name each setting is read
from, and ``export`` lines a shell can source safely (chorus.env)."""

from __future__ import annotations

import shlex

from chorus.config import ChorusSettings


def shell_exports(env: dict[str, str]) -> str:
    """``export NAME=value`` lines that a shell sources without running anything in a value (a state
    path with ``$(...)`` or a quote in it stays a string)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def settings_env_name(*path: str) -> str:
    """The environment variable that sets a (nested) setting, e.g. CHORUS_COMPUTE__ADDRESS."""
    config = ChorusSettings.model_config
    prefix, delimiter = config.get("env_prefix") or "", config.get("env_nested_delimiter") or "__"
    return (prefix + delimiter.join(path)).upper()


def settings_env_names() -> set[str]:
    """Every environment variable the settings model reads (sections and their fields)."""
    from pydantic import BaseModel

    names: set[str] = set()

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, info in model.model_fields.items():
            names.add(settings_env_name(*path, name))
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, (*path, name))

    walk(ChorusSettings, ())
    return names
