"""Where the stages that fan out compute (the ``compute`` section)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from chorus.config.sections import SectionSettings


class ComputeSettings(SectionSettings):
    """Where the stages that fan out (features, labels, melody, the index's check) compute: a Dask
    scheduler, or a local cluster started for the stage. How, never what: outside every key."""

    _runtime_fields = frozenset({"address", "workers", "threads_per_worker", "worker_memory_limit", "tls_ca_file",
                                 "tls_cert_file", "tls_key_file"})

    address: str | None = Field(None, description="Scheduler address (tcp://host:8786 or tls://host:8786); "
                                                  "None starts a local cluster per stage.")
    workers: int | None = Field(None, ge=1, description="Worker processes of the local cluster (default: one per CPU core).")
    threads_per_worker: int = Field(1, ge=1, description="Threads per local worker (librosa and numpy scale with "
                                                        "processes here, not threads).")
    worker_memory_limit: str = Field("auto", description="Memory limit per local Dask worker (auto: memory / workers).")
    tls_ca_file: Path | None = Field(None, description="CA of a TLS scheduler (else Dask's configuration, e.g. "
                                                      "DASK_DISTRIBUTED__COMM__TLS__CA_FILE).")
    tls_cert_file: Path | None = Field(None, description="Client certificate for a TLS scheduler.")
    tls_key_file: Path | None = Field(None, description="Client key for a TLS scheduler.")

    @model_validator(mode="after")
    def _tls_complete(self) -> ComputeSettings:
        given = [self.tls_ca_file, self.tls_cert_file, self.tls_key_file]
        if any(given) and not all(given):
            raise ValueError("compute.tls_ca_file, tls_cert_file and tls_key_file go together")
        return self


MOVED_TO_COMPUTE = {"dask_address": "address", "dask_workers": "workers", "worker_memory_limit": "worker_memory_limit"}
