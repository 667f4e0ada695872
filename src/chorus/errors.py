"""Errors that a user can act on: each names the file/row and the rule it broke."""

from __future__ import annotations


class ChorusError(Exception):
    """Base class: the CLI prints these as one line (a traceback only with --debug)."""


class ConfigError(ChorusError):
    """A setting or configuration file is invalid."""


class StateLockedError(ChorusError):
    """Another chorus run holds the state directory."""


class InputError(ChorusError):
    """An input file or table breaks a rule."""

    def __init__(self, where: str, rule: str, detail: str = "") -> None:
        self.where, self.rule, self.detail = where, rule, detail
        msg = f"{where}: {rule}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class ValidationFailedError(ChorusError):
    """A Great Expectations suite failed on a table."""

    def __init__(self, table: str, failures: list[str], docs: str | None = None) -> None:
        self.table, self.failures, self.docs = table, failures, docs
        text = f"table '{table}' failed validation: " + "; ".join(failures)
        if docs:
            text += f" (Data Docs: {docs})"
        super().__init__(text)


class StaleFeaturesError(ChorusError):
    """A model was asked to use features made with another feature configuration."""


class UnsafeModelError(ChorusError):
    """A stored model or checkpoint that chorus will not load: not in its own pickle-free format,
    or naming a type or network outside what it builds."""


class ServiceUnavailableError(ChorusError):
    """A service the run talks to (MLflow, its PostgreSQL store, the Prefect server, a Dask
    scheduler) stopped answering; what is committed stays, and the same command resumes."""

    def __init__(self, service: str, address: str, reason: str) -> None:
        self.service, self.address, self.reason = service, address, reason
        super().__init__(f"{service} at {address} is unreachable ({reason}): start it again (`chorus services up` "
                         "for the local services) and run the same command")
