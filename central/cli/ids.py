"""Ids by a unique prefix: every command that takes a job, deployment or node id also takes
its first characters (4 at least) when no other id starts with them.

An exact id always wins. A prefix that fits more than one id is bad input (exit 2, the
message names the candidates); one that fits none is an unknown id (exit 4).
"""

from __future__ import annotations

from collections.abc import Iterable

from events.errors import CyxwizError

__all__ = ["MIN_PREFIX", "AmbiguousId", "UnknownId", "match_prefix", "resolve_deployment", "resolve_job",
           "resolve_job_on_bus"]

MIN_PREFIX = 4
_SHOWN = 8  # candidates named in the message


class AmbiguousId(CyxwizError, ValueError):
    """More than one id starts with the prefix given."""

    code = 400


class UnknownId(CyxwizError, LookupError):
    """No id is, or starts with, what was given."""

    code = 404


def match_prefix(given: str, candidates: Iterable[str], kind: str) -> str:
    """The one id of ``candidates`` that is ``given`` or starts with it."""
    ids = set(candidates)
    if given in ids:
        return given
    if len(given) < MIN_PREFIX:
        raise UnknownId(f"unknown {kind} {given!r} (an id prefix needs at least {MIN_PREFIX} characters)")
    found = sorted(i for i in ids if i.startswith(given))
    if len(found) == 1:
        return found[0]
    if not found:
        raise UnknownId(f"unknown {kind} {given!r}: no {kind} id is or starts with it")
    more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    raise AmbiguousId(f"{kind} id prefix {given!r} is ambiguous: it matches {', '.join(found[:_SHOWN])}{more}; "
                      "give more characters")


def resolve_job(client, given: str) -> str:
    """The job id ``given`` stands for, asking central (``central.client.Client``)."""
    from central.client import NotFound

    try:
        return client.status(given).job_id
    except NotFound:
        pass
    return match_prefix(given, (job.job_id for job in client.iter_jobs()), "job")


def resolve_deployment(client, given: str) -> str:
    """The deployment id ``given`` stands for, asking central."""
    return match_prefix(given, (d.deployment_id for d in client.deployments()), "deployment")


async def resolve_job_on_bus(bus, given: str) -> str:
    """The job id ``given`` (a valid subject token: ``events.codec.job_subject`` checks it)
    stands for, from the subjects of the event stream (no central needed)."""
    prefix = "events.job."
    if await bus.subject_version(prefix + given):
        return given
    if len(given) < MIN_PREFIX:
        return match_prefix(given, (), "job")
    subjects = await bus.subjects(f"{prefix}>")
    return match_prefix(given, (s[len(prefix):] for s in subjects), "job")
