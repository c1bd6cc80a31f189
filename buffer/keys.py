"""Every Redis key this project uses, built in one place from one prefix.

Layout (``P`` is the prefix, ``adjoint-sampling`` by default):

==================================  ==========  ===================================================
key                                 type        holds
==================================  ==========  ===================================================
``P:buffer:NAME:entries``           hash        sequence number -> encoded replay entry
``P:buffer:NAME:meta``              hash        ``capacity``, ``head`` (next sequence), ``tail``
``P:jobs:MODEL``                    stream      evaluation jobs for energy model ``MODEL``
``P:jobs:MODEL:attempts``           hash        job id -> deliveries so far
``P:jobs:MODEL:parked``             stream      jobs given up on, with their last error
``P:job:JOB_ID``                    string      the job's status (JSON), expires after a TTL
``P:checkpoint:RUN``                string      the latest published checkpoint of run ``RUN`` (JSON)
``P:sampling:queue``                stream      conformer-sampling jobs of the HTTP service (job ids)
``P:sampling:job:JOB_ID``           hash        a sampling job's record (state, request, progress), TTL
``P:sampling:job:JOB_ID:results``   hash        SMILES index -> result (JSON), same TTL as the record
==================================  ==========  ===================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RedisKeys", "validate_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$")


def validate_name(kind: str, name: str, *, allow_colon: bool = False) -> str:
    """Names that become part of a key: letters, digits, ``.``, ``_``, ``-`` (and ``:`` for job ids)."""
    pattern = _JOB_ID if allow_colon else _NAME
    if not pattern.match(name):
        allowed = "letters, digits, '.', '_', '-'" + (", ':'" if allow_colon else "")
        raise ValueError(f"invalid {kind} {name!r}: use {allowed}, starting with a letter or digit")
    return name


@dataclass(frozen=True)
class RedisKeys:
    """Key builder; ``RedisKeys("test-1")`` isolates everything under another prefix."""

    prefix: str = "adjoint-sampling"

    def __post_init__(self) -> None:
        validate_name("key prefix", self.prefix)

    def buffer_entries(self, name: str) -> str:
        return f"{self.prefix}:buffer:{validate_name('buffer name', name)}:entries"

    def buffer_meta(self, name: str) -> str:
        return f"{self.prefix}:buffer:{validate_name('buffer name', name)}:meta"

    def job_stream(self, model: str) -> str:
        return f"{self.prefix}:jobs:{validate_name('energy model name', model)}"

    def job_attempts(self, model: str) -> str:
        return f"{self.job_stream(model)}:attempts"

    def parked_jobs(self, model: str) -> str:
        return f"{self.job_stream(model)}:parked"

    def job_status(self, job_id: str) -> str:
        return f"{self.prefix}:job:{validate_name('job id', job_id, allow_colon=True)}"

    def checkpoint(self, run: str) -> str:
        return f"{self.prefix}:checkpoint:{validate_name('run name', run)}"

    def sampling_queue(self) -> str:
        return f"{self.prefix}:sampling:queue"

    def sampling_job(self, job_id: str) -> str:
        return f"{self.prefix}:sampling:job:{validate_name('job id', job_id)}"

    def sampling_results(self, job_id: str) -> str:
        return f"{self.sampling_job(job_id)}:results"
