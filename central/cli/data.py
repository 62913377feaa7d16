"""``cyxwiz sql``, ``cyxwiz events publish|tail`` and ``cyxwiz projection rebuild``.

Where the events are: ``--nats`` / ``$CYXWIZ_NATS_URL``, else the home's cluster file
(``central.cluster``), else the embedded server of ``$CYXWIZ_HOME`` (reused when it
runs; started for the command and stopped after it when it does not, so its store, not
a stray process, is what stays).
Where SQL runs: central's REST API (``--rest``, ``$CYXWIZ_REST_URL``, the cluster file, or
found from ``--central``) when it answers (central holds the DuckDB file while it runs),
else the file itself, opened read-only.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from bus import BusError, BusForbidden, EventBus, default_home
from bus.loop import run as run_loop
from central.readmodel.projection import Projection, ProjectionError
from central.readmodel.projector import rebuild
from central.adapters.job_limits import check_spec
from central.lifecycle.errors import Refused
from central.lifecycle.state import CentralState
from central.readmodel.sql import QueryResult, SqlError, SqlTooLarge
from central.cluster import connect_bus, rest_url
from events import EVENT_TYPES, CyxwizError, InvalidEvent, JobSubmitted, build, subject_for

from central.cli.exits import EXIT_INPUT, EXIT_UNREACHABLE as EXIT_ENV, exit_code  # noqa: E402

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

events_app = typer.Typer(help="Publish and watch events on the bus.", no_args_is_help=True)
projection_app = typer.Typer(help="The DuckDB read model.", no_args_is_help=True)

NatsOption = typer.Option(None, "--nats", envvar="CYXWIZ_NATS_URL", help="NATS URL (default: the embedded server of CYXWIZ_HOME)")
HomeOption = typer.Option(None, "--home", envvar="CYXWIZ_HOME", help="state folder (default .cyxwiz)")


def register(app: typer.Typer) -> None:
    app.command("sql")(sql_command)
    app.add_typer(events_app, name="events")
    app.add_typer(projection_app, name="projection")


def fail(message: str, code: int) -> None:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


# --- sql -------------------------------------------------------------------------------


def sql_command(
    query: str = typer.Argument(..., help='read-only SQL, e.g. "SELECT state, count(*) FROM jobs GROUP BY 1"'),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines, one object per row"),
    as_csv: bool = typer.Option(False, "--csv", help="print CSV with a header"),
    central: Optional[str] = typer.Option(None, "--central", envvar="CYXWIZ_CENTRAL", help="central's gRPC HOST:PORT (its REST URL is found from the cluster file, or --rest)"),
    rest: Optional[str] = typer.Option(None, "--rest", envvar="CYXWIZ_REST_URL", help="central's REST URL (default: from the cluster file, else http://localhost:8080)"),
    db: Optional[Path] = typer.Option(None, "--db", help="query this DuckDB file directly"),
    home: Optional[Path] = HomeOption,
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CYXWIZ_API_KEY"),
) -> None:
    """Run read-only SQL over the event history (tables: events, jobs, nodes, epochs, ...)."""
    if central and central.startswith(("http://", "https://")):
        fail(f"--central takes central's gRPC HOST:PORT (got {central!r}); give a REST URL with --rest", EXIT_INPUT)
    try:
        result = _run_sql(query, central, rest, db, home, api_key)
    except CyxwizError as exc:
        fail(str(exc), exit_code(exc))
    _print_result(result, "json" if as_json else "csv" if as_csv else "table")


def _run_sql(query: str, central: str | None, rest: str | None, db: Path | None, home: Path | None,
             api_key: str | None) -> QueryResult:
    if db is None:
        url, named = rest_url(rest, central=central, home=home)
        if named:  # a guessed localhost:8080 may be someone else's central: only a named one is asked
            return sql_over_rest(url, query, api_key)
        db = Path(home or default_home()) / "cyxwiz.duckdb"
    projection = Projection(db, read_only=True)
    try:
        return projection.query(query)
    finally:
        projection.close()


def sql_over_rest(url: str, query: str, api_key: str | None) -> QueryResult:
    """The answer of central's REST API at ``url``; one that does not answer is an error."""
    request = urllib.request.Request(
        url.rstrip("/") + "/api/v1/sql",
        data=json.dumps({"sql": query}).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=_REST_TIMEOUT_S) as response:
            return msgspec.json.decode(response.read(), type=QueryResult)
    except urllib.error.HTTPError as exc:
        message = _error_message(exc.read()) or exc.reason
        if exc.code in (400, 413):  # the query's fault: refused, broken, too slow or too large
            raise (SqlTooLarge if exc.code == 413 else SqlError)(message) from None
        raise CyxwizError(f"central at {url} answered {exc.code}: {message}", code=exc.code) from None
    except (urllib.error.URLError, OSError, msgspec.DecodeError) as exc:
        raise ProjectionError(f"central's REST API at {url} does not answer ({exc}); "
                              "give --db FILE to read a DuckDB file instead") from None


_REST_TIMEOUT_S = 120  # central stops a query at its own limit (30 s by default) and answers why


def _error_message(body: bytes) -> str | None:
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None


def _print_result(result: QueryResult, fmt: str) -> None:
    if fmt == "json":
        for row in result.rows:
            sys.stdout.write(msgspec.json.encode(dict(zip(result.columns, row))).decode() + "\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    else:
        table = Table(*result.columns, show_lines=False)
        for row in result.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)
        err.print(f"{len(result.rows)} row(s)" + (" (truncated)" if result.truncated else ""), highlight=False)


# --- events ------------------------------------------------------------------------------


@events_app.command("publish")
def publish_command(
    event_type: str = typer.Argument(..., help="e.g. JobSubmitted"),
    data: str = typer.Option(..., "--data", "-d", help="the event's fields as a JSON object"),
    nats_url: Optional[str] = NatsOption,
    home: Optional[Path] = HomeOption,
) -> None:
    """Validate an event against its type and its aggregate's history, then append it to the stream.

    One that would be an anomaly (a JobSubmitted whose id exists, an epoch a job never
    reached, ...) is refused: exit 5, nothing published."""
    try:
        fields = json.loads(data)
    except ValueError as exc:
        fail(f"--data is not valid JSON: {exc}", EXIT_INPUT)
    try:
        event = build(event_type, fields)
        subject_for(event)  # an id that cannot be a subject token is bad data too
        if isinstance(event, JobSubmitted):
            check_spec(event.spec)  # the job SubmitJob would refuse is refused here too, in the same words
    except InvalidEvent as exc:
        fail(str(exc), EXIT_INPUT)
    except Refused as exc:
        fail(f"JobSubmitted: {exc.message}", EXIT_INPUT)

    async def publish(bus: EventBus) -> int:
        subject = subject_for(event)
        try:
            version, reason = await fits_stream(bus, event, subject)
        except BusForbidden:  # a publisher may not read: consumers still ignore an event that does not fit
            err.print("note: these credentials may not read the stream, so whether the event fits its "
                      f"{subject} was not checked", highlight=False, markup=False)
            return await bus.append(event)
        if reason is not None:
            raise EventRefused(f"{event_type} would be an anomaly on {subject} (seq {version}): {reason}; "
                               "nothing published")
        return await bus.append(event, expected_version=version)

    try:
        seq = _with_bus(nats_url, home, publish)
    except EventRefused as exc:
        fail(str(exc), exit_code(exc))
    out.print(f"published {event_type} {event.event_id} as seq {seq}", highlight=False)


class EventRefused(CyxwizError):
    """The event does not fit its aggregate's history (``central.lifecycle``'s anomaly rules)."""

    code = 409


async def fits_stream(bus: EventBus, event: Any, subject: str) -> tuple[int, str | None]:
    """The version of ``subject`` now and why ``event`` would be an anomaly there (None:
    it fits): its aggregate's history folded by the rules every consumer uses."""
    version = await bus.subject_version(subject)
    state = CentralState()
    if version:
        async for msg in bus.read(1, until_seq=version, subjects=subject):
            state.apply(msg)
    before = state.anomaly_count
    state.apply_event(event, version + 1)
    return version, (state.anomalies[-1][2] if state.anomaly_count > before else None)


@events_app.command("tail")
def tail_command(
    event_type: Optional[str] = typer.Option(None, "--type", "-t", help="only this event type"),
    subject: Optional[str] = typer.Option(None, "--subject", "-s", help="only this subject (NATS wildcards), e.g. events.job.j1"),
    from_start: bool = typer.Option(False, "--from-start", help="replay the whole stream first"),
    as_json: bool = typer.Option(False, "--json", help="print each event as one JSON line"),
    count: Optional[int] = typer.Option(None, "--count", "-n", help="stop after this many events"),
    nats_url: Optional[str] = NatsOption,
    home: Optional[Path] = HomeOption,
) -> None:
    """Print events as they are appended (Ctrl-C to stop)."""
    if event_type is not None and event_type not in EVENT_TYPES:
        fail(f"unknown event type {event_type!r}; known types: {', '.join(sorted(EVENT_TYPES))}", EXIT_INPUT)
    subjects = subject or ("telemetry.>" if event_type == "NodeHeartbeat" else "events.>")
    if not subjects.startswith(("events.", "telemetry.")):
        fail(f"--subject must start with 'events.' or 'telemetry.' (got {subjects!r})", EXIT_INPUT)

    async def tail(bus: EventBus) -> int:
        stream = "CYXWIZ_EVENTS" if subjects.startswith("events") else "CYXWIZ_TELEMETRY"
        start = 1 if from_start else await bus.last_sequence(stream) + 1
        shown = 0
        async for batch in bus.subscribe_batches(start, subjects=subjects):
            for msg in batch:
                kind = msg.headers.get("Cyxwiz-Event-Type", "?")
                if event_type and kind != event_type:
                    continue
                _print_message(msg, kind, as_json)
                shown += 1
                if count is not None and shown >= count:
                    return shown
        return shown

    _with_bus(nats_url, home, tail)


def _print_message(msg: Any, kind: str, as_json: bool) -> None:
    text = msg.data.decode("utf-8", errors="replace")
    if as_json:
        sys.stdout.write(json.dumps({"seq": msg.seq, "subject": msg.subject, "stored_at": msg.time.isoformat(),
                                     "type": kind, "data": _json_or_text(text)}) + "\n")
        sys.stdout.flush()
    else:
        out.print(f"{msg.seq:>8}  {msg.time:%H:%M:%S.%f}  {kind:<20} {msg.subject}  {text}", highlight=False, markup=False)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- projection ----------------------------------------------------------------------------


@projection_app.command("rebuild")
def rebuild_command(
    db: Optional[Path] = typer.Option(None, "--db", help="the DuckDB file (default $CYXWIZ_HOME/cyxwiz.duckdb)"),
    nats_url: Optional[str] = NatsOption,
    home: Optional[Path] = HomeOption,
) -> None:
    """Replay the whole event stream into a fresh DuckDB file (replaces it at the end)."""
    path = db or Path(home or default_home()) / "cyxwiz.duckdb"

    async def run(bus: EventBus) -> int:
        return await rebuild(path, bus)

    try:
        last = _with_bus(nats_url, home, run)
    except ProjectionError as exc:
        fail(str(exc), EXIT_ENV)
    out.print(f"rebuilt {path} from the stream up to seq {last}", highlight=False)


# --- the bus -----------------------------------------------------------------------------------


def _with_bus(nats_url: str | None, home: Path | None, action) -> Any:
    """Run ``action(bus)``; an embedded server started for it is stopped afterwards."""

    async def main() -> Any:
        bus, server = await connect_bus(nats_url, home=home, timeout=2.5)
        try:
            return await action(bus)
        finally:
            await bus.close()
            if server is not None and server.owned:
                await asyncio.to_thread(server.stop)

    try:
        return run_loop(main())
    except BusError as exc:
        fail(str(exc), exit_code(exc))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
