"""Property: interleaved PostgreSQL claims never admit more runs into a key than its limit.

Each example starts in a fresh namespace of a fresh schema where two keys
already have a key row (a run claimed and completed), the third has none.
Hypothesis then draws up to 15 actions over three claim connections and a
fourth (autocommit) connection, and drives the backend's own rendered claim
statements (any-workflow and routed: ``_q.claim_workflow_runs`` and
``_q.claim_routed_workflow_runs`` with the parameters ``claim_workflow_runs``
binds) inside transactions the test holds open:

- ``create``: a pending run of a (workflow, key, limit), or an unlimited one;
- ``claim``: BEGIN and run the claim statement for 1-3 worker ids on an idle
  connection, leaving the transaction open. A claim can wait on another open
  transaction's uncommitted insert of the same new key row: each statement
  runs in a thread and the test watches ``pg_blocking_pids``; while a claim
  waits, every action is turned into committing or rolling back (or
  un-pausing) what it waits on, so the test itself never deadlocks;
- ``paused`` claims stop right after their snapshot is taken (their first
  ``NOW()`` call, a volatile gate function first on their search path, waits
  on an advisory lock the fourth connection holds) until a ``gate`` action, so
  other claims can commit between the snapshot and the key row locks: the
  window the "admitted after our snapshot" clause of the admission exists for;
- ``end``: commit or roll back an open claim;
- ``touch`` a run the way other parties do, skipping rows an open claim holds:
  complete it, park it (sleeping, or running with no worker), cancel it, let
  its lease expire, or ``ts_release`` it (a TypeScript worker takes it:
  ``attempts + 1``, a lease of its own, no key row write).

Invariant, after every action and once every transaction is committed at the
end: per (workflow, key), the runs that are running and leased *at the
attempt a committed Python claim gave them* number at most the limit. A run
whose lease expired still counts until a claim takes it over; a run a
TypeScript worker took does not (it does not honour limits).

The races the admission is built against are pinned as explicit examples,
run before the drawn ones (see the ``@example`` comments). Against a broken
admission the test fails: admitting every candidate, trusting the snapshot for
holders admitted after it (no ``attempts < attempt`` clause), or reading the
key rows without locking them.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from openworkflow.backend_common import next_fair_cursor
from openworkflow.core.backend import ClaimWorkflowRunsParams, CreateWorkflowRunParams
from openworkflow.postgres import PostgresBackend
from openworkflow.postgres.runs import claimed_runs
from tests.faults.figures import Figure, report
from tests.fixtures.postgres import CLOCK_SCHEMA, prepare_server
from tests.support.waiting import block_until

LIMITED: tuple[tuple[str, str | None, int | None], ...] = (
    ("wf", "a", 1),
    ("wf2", "a", 1),
    ("wf", "b", 2),
    ("wf", None, None),
)
"""What ``create`` makes: (workflow, concurrency key, limit); the last is unlimited."""

SEEDED = (0, 2)
"""Keys (indexes of :data:`LIMITED`) whose key row exists when an example starts, with
a holder that finished (a run claimed and completed): a claim then locks and
updates the row, where a key with no row yet is inserted (and may be waited on)."""

ROUTES: tuple[list[str] | None, ...] = (None, ["wf", "wf2"], ["wf2"])
"""A claim's routing: the any-workflow statement, or the routed one for these workflows."""

LEASE_MS = 60_000
"""Leases outlive the test; ``expire`` ends one on purpose."""

SETTLE_S = 10.0
"""How long a claim may take to finish or to wait on a known lock (far above need)."""

_OWNED = '"status" = \'running\' AND "worker_id" IS NOT NULL'
_LIVE = "\"status\" IN ('pending', 'running', 'sleeping')"
TOUCHES: dict[str, tuple[str, str]] = {
    "complete": (
        '"status" = \'completed\', "available_at" = NULL, "finished_at" = NOW()',
        _OWNED,
    ),
    "park_sleeping": (
        '"status" = \'sleeping\', "worker_id" = NULL, "available_at" = NOW()',
        _OWNED,
    ),
    "park_waiting": ('"worker_id" = NULL, "available_at" = NOW()', _OWNED),
    "cancel": (
        '"status" = \'canceled\', "worker_id" = NULL, "available_at" = NULL, "finished_at" = NOW()',
        _LIVE,
    ),
    "expire": ("\"available_at\" = NOW() - INTERVAL '1 minute'", _OWNED),
    "ts_release": (
        '"attempts" = "attempts" + 1, "status" = \'running\', "worker_id" = \'ts-worker\', '
        '"available_at" = NOW() + INTERVAL \'1 minute\', "started_at" = NOW()',
        _LIVE,
    ),
}
"""Each touch: (SET clause, which runs it applies to)."""

_TOUCH_SQL = """UPDATE "{schema}"."workflow_runs" SET {assign}, "updated_at" = NOW()
WHERE "namespace_id" = %(ns)s AND "id" = (
  SELECT "id" FROM "{schema}"."workflow_runs"
  WHERE "namespace_id" = %(ns)s AND "id" = %(id)s AND {where}
  FOR UPDATE SKIP LOCKED)"""

_CANDIDATES_SQL = """SELECT "id" FROM "{schema}"."workflow_runs"
WHERE "namespace_id" = %(ns)s AND "id" = ANY(%(ids)s) AND {where}
ORDER BY "created_at", "id"
"""

_LEASED_SQL = """SELECT "id", "attempts", "workflow_name", "concurrency_key", "concurrency_limit"
FROM "{schema}"."workflow_runs"
WHERE "namespace_id" = %(ns)s AND "status" = 'running' AND "worker_id" IS NOT NULL
  AND "concurrency_key" IS NOT NULL"""

_GATE_DDL = """CREATE SCHEMA "{gate}";
CREATE FUNCTION "{gate}".now() RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  -- Volatile, so the planner never calls it: the first call is in execution,
  -- after the statement's snapshot, and only that one waits.
  IF current_setting('ow_gate.armed', true) = 'on' THEN
    PERFORM set_config('ow_gate.armed', 'off', true);
    PERFORM pg_advisory_lock_shared({lock});
    PERFORM pg_advisory_unlock_shared({lock});
  END IF;
  RETURN {clock}.now();
END $$;"""


@dataclass(frozen=True)
class Database:
    """The test's fresh schema (migrated) and its gate schema."""

    url: str
    schema: str
    gate: str
    gate_lock: int


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    """A fresh, migrated schema and the pause gate, dropped afterwards."""
    url = prepare_server()
    suffix = uuid.uuid4().hex[:10]
    db = Database(url, f"ow_interleave_{suffix}", f"ow_gate_{suffix}", zlib.crc32(suffix.encode()))

    async def migrate() -> None:
        backend = PostgresBackend(url, schema=db.schema, listen=False)
        await backend.open()
        await backend.stop()

    asyncio.run(migrate())
    ddl = _GATE_DDL.format(gate=db.gate, lock=db.gate_lock, clock=CLOCK_SCHEMA)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(ddl.encode())
    _TALLY.clear()
    try:
        yield db
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE'.encode())
            admin.execute(f'DROP SCHEMA IF EXISTS "{db.gate}" CASCADE'.encode())
        _report_interleavings()


# Counted across hypothesis examples; the figure is reported when the module's schema goes.
_TALLY: Counter[str] = Counter()


def _report_interleavings() -> None:
    report(
        Figure(
            fault_id="F6",
            title="interleaved concurrency-key claims (PostgreSQL, paused transactions)",
            runs=_TALLY["runs"],
            faults=_TALLY["examples"],
            duplicated=_TALLY["over_admitted"],
            details=(
                f"hypothesis: {_TALLY['examples']} interleavings of claims paused inside their "
                f"transactions, {_TALLY['checks']} checks of the leased runs per key in the "
                f"database: leases beyond a key's limit {_TALLY['over_admitted']}; lost: not "
                "applicable (no run is expected to finish)"
            ),
        )
    )


@dataclass(eq=False)
class Claimer:
    """One claim connection: idle, open (claim done, transaction open) or running."""

    connection: psycopg.Connection[Any]
    pid: int
    state: str = "idle"
    future: Future[list[Any]] | None = None
    wanted: int = 0
    leased: list[tuple[str, int]] = field(default_factory=list)
    blockers: frozenset[int] = frozenset()


class Interleaving:
    """Applies the drawn actions to PostgreSQL and checks the invariant."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.backend = PostgresBackend(
            db.url, namespace_id=str(uuid.uuid4()), schema=db.schema, listen=False
        )
        self.admin = psycopg.connect(db.url, autocommit=True, prepare_threshold=None)
        self.claimers: list[Claimer] = []
        for _ in range(3):
            connection = psycopg.connect(db.url, prepare_threshold=None)
            self.claimers.append(Claimer(connection, connection.info.backend_pid))
        self.threads = ThreadPoolExecutor(max_workers=3)
        self.runs: list[str] = []
        self.python_leases: set[tuple[str, int]] = set()
        self.gate_locked = False
        self.paused: Claimer | None = None
        self.serial = 0

    # -- actions --------------------------------------------------------------------------

    def apply(self, action: tuple[Any, ...]) -> None:
        """One action; while a claim waits on a lock, one that ends its wait instead."""
        if self._waiting():
            self._resolve(action)
        elif action[0] == "create":
            self._create(*action[1:])
        elif action[0] == "claim":
            self._claim(*action[1:])
        elif action[0] == "end":
            self._end(*action[1:])
        elif action[0] == "touch":
            self._touch(*action[1:])
        elif action[0] == "gate":
            self._open_gate()
        self._settle()

    def _create(self, index: int, count: int) -> None:
        workflow_name, key, limit = LIMITED[index]
        params = CreateWorkflowRunParams(
            workflow_name=workflow_name, concurrency_key=key, concurrency_limit=limit
        )
        for _ in range(count):
            values = self.backend._create_run_values(params)
            self.admin.execute(self.backend._q.insert_workflow_run, values)
            self.runs.append(values["run_id"])

    def _claim(self, index: int, wanted: int, route: int, paused: bool) -> None:
        idle = [c for c in self.claimers if c.state == "idle"]
        if not idle:
            return
        claimer = self.claimers[index] if self.claimers[index] in idle else idle[0]
        if paused and self.paused is None:
            if not self.gate_locked:
                self.admin.execute("SELECT pg_advisory_lock(%s)", (self.db.gate_lock,))
                self.gate_locked = True
            path = f'"{self.db.gate}", {CLOCK_SCHEMA}, pg_catalog, public'
            claimer.connection.execute(f"SET LOCAL search_path = {path}".encode())
            claimer.connection.execute(b"SET LOCAL ow_gate.armed = 'on'")
            self.paused = claimer
            event("paused claim")
        self.serial += 1
        worker_ids = [f"w{self.serial}-{slot}" for slot in range(wanted)]
        routes = ROUTES[route]
        # The very statement and values PostgresRuns.claim_workflow_runs sends.
        statement = self.backend.claim_statement(
            ClaimWorkflowRunsParams(
                worker_ids=worker_ids,
                lease_duration_ms=LEASE_MS,
                workflows=None if routes is None else [(name, None) for name in routes],
            )
        )
        assert statement is not None
        query, values = statement
        claimer.state, claimer.wanted = "running", wanted
        claimer.future = self.threads.submit(self._fetch, claimer.connection, query, values)

    @staticmethod
    def _fetch(connection: psycopg.Connection[Any], query: bytes, values: dict[str, Any]) -> Any:
        return connection.execute(query, values).fetchall()

    def _end(self, index: int, commit: bool) -> None:
        open_ = [c for c in self.claimers if c.state == "open"]
        if open_:
            claimer = self.claimers[index] if self.claimers[index] in open_ else open_[0]
            self._finish_transaction(claimer, commit)

    def _finish_transaction(self, claimer: Claimer, commit: bool) -> None:
        if commit:
            claimer.connection.commit()
            self.python_leases.update(claimer.leased)
        else:
            claimer.connection.rollback()
        claimer.leased, claimer.state = [], "idle"

    def seed(self) -> None:
        """Give the :data:`SEEDED` keys a row: claim one run of each, commit, complete them."""
        for index in SEEDED:
            self._create(index, 1)
        self._claim(0, len(SEEDED), 0, False)
        self._settle()
        assert len(self.claimers[0].leased) == len(SEEDED)
        self._end(0, True)
        for index in range(len(SEEDED)):
            self._touch("complete", index)
        self.runs.clear()

    def _touch(self, kind: str, index: int) -> None:
        """Touch the index-th (modulo) committed run the kind applies to, unless a claim has it."""
        assign, where = TOUCHES[kind]
        candidates = self.admin.execute(
            _CANDIDATES_SQL.format(schema=self.db.schema, where=where).encode(),
            self.backend._params(ids=self.runs),
        ).fetchall()
        if candidates:
            statement = _TOUCH_SQL.format(schema=self.db.schema, assign=assign, where=where)
            values = self.backend._params(id=candidates[index % len(candidates)][0])
            self.admin.execute(statement.encode(), values)

    def _open_gate(self) -> None:
        if self.gate_locked:
            if self.paused is not None:
                event("a paused claim went on")
            self.admin.execute("SELECT pg_advisory_unlock(%s)", (self.db.gate_lock,))
            self.gate_locked = False

    # -- waits ----------------------------------------------------------------------------

    def _settle(self) -> None:
        """Wait until every running claim has finished or waits on a lock one of ours holds."""
        block_until(self._settled, "claims to finish or wait", SETTLE_S, interval=0.002)

    def _settled(self) -> bool:
        settled = True
        ours = {self.admin.info.backend_pid} | {c.pid for c in self.claimers}
        for claimer in self.claimers:
            if claimer.state != "running" or claimer.future is None:
                continue
            if claimer.future.done():
                self._statement_done(claimer, claimer.future.result())
                continue
            row = self.admin.execute("SELECT pg_blocking_pids(%s)", (claimer.pid,)).fetchone()
            blockers = frozenset(row[0] if row else [])
            claimer.blockers = blockers
            if blockers & {c.pid for c in self.claimers}:
                event("a claim waited on another claim")
            settled = settled and bool(blockers) and blockers <= ours
        return settled

    def _statement_done(self, claimer: Claimer, rows: list[Any]) -> None:
        claimed = claimed_runs(rows)
        assert len(claimed) <= claimer.wanted
        claimer.leased = [(run.id, run.attempts) for run in claimed]
        claimer.state, claimer.future, claimer.blockers = "open", None, frozenset()
        self.backend._fair_cursor = next_fair_cursor(
            self.backend._fair_cursor, claimed, claimer.wanted
        )
        if self.paused is claimer:
            self.paused = None

    def _waiting(self) -> list[Claimer]:
        """Claims waiting on a lock another claim holds (a paused claim waits on the gate)."""
        claim_pids = {c.pid for c in self.claimers}
        return [c for c in self.claimers if c.state == "running" and c.blockers & claim_pids]

    def _resolve(self, action: tuple[Any, ...]) -> None:
        """End what a waiting claim waits on: commit or roll back a blocker, or open the gate."""
        blockers = set().union(*(c.blockers for c in self._waiting()))
        open_ = [c for c in self.claimers if c.state == "open" and c.pid in blockers]
        if not open_:
            # The wait is on a running claim: the paused one (or one that waits on it).
            assert self.gate_locked, "a claim waits on a claim that neither paused nor finished"
            self._open_gate()
            return
        index, commit = (action[1], action[2]) if action[0] == "end" else (0, True)
        self._finish_transaction(open_[index % len(open_)], commit)

    def drain(self) -> None:
        """Commit every open claim, opening the gate and ending waits, until all are idle."""
        for _ in range(12):
            if all(c.state == "idle" for c in self.claimers):
                return
            self._open_gate()
            for claimer in self.claimers:
                if claimer.state == "open":
                    self._finish_transaction(claimer, True)
                    self.check()
            self._settle()
        raise AssertionError("claims still running after the drain")

    # -- the invariant --------------------------------------------------------------------

    def check(self) -> None:
        """At most ``limit`` runs per key are leased at an attempt a Python claim gave them."""
        statement = _LEASED_SQL.format(schema=self.db.schema).encode()
        rows = self.admin.execute(statement, self.backend._params()).fetchall()
        held: Counter[tuple[str, str]] = Counter()
        limits: dict[tuple[str, str], int] = {}
        for run_id, attempts, workflow_name, key, limit in rows:
            if (run_id, attempts) in self.python_leases:
                held[(workflow_name, key)] += 1
                limits[(workflow_name, key)] = limit
        over = {key: count for key, count in held.items() if count > limits[key]}
        _TALLY["checks"] += 1
        _TALLY["over_admitted"] += sum(count - limits[key] for key, count in over.items())
        assert not over, f"over-admitted keys (key: running leased runs): {over}"

    def close(self) -> None:
        """Release every lock (the gate, open transactions), then every waiting thread."""
        self.admin.close()
        for claimer in self.claimers:
            if claimer.state == "running":
                claimer.connection.cancel()  # after a failure, whatever it waits on
            else:
                claimer.connection.close()
        self.threads.shutdown(wait=True)
        for claimer in self.claimers:
            claimer.connection.close()


_connection = st.integers(0, 2)
_CLAIMS = st.tuples(
    st.just("claim"), _connection, st.integers(1, 3), st.integers(0, 2), st.booleans()
)
_CREATES = st.tuples(st.just("create"), st.integers(0, len(LIMITED) - 1), st.integers(1, 3))
ACTIONS = st.one_of(
    _CREATES,
    _CLAIMS,
    _CLAIMS,
    st.tuples(st.just("end"), _connection, st.booleans()),
    st.tuples(st.just("touch"), st.sampled_from(sorted(TOUCHES)), st.integers(0, 14)),
    st.tuples(st.just("gate")),
)


END_0, END_1 = ("end", 0, True), ("end", 1, True)
PAUSED_0 = ("claim", 0, 1, 0, True)
WF2_0, WF2_1 = ("claim", 0, 1, 2, False), ("claim", 1, 1, 2, False)
CLAIM_2 = ("claim", 1, 2, 0, False)


@settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
# The races the admission is built against, each run first, then the drawn ones:
# - one claim, two runs of a key of limit 1 (admission by rank within the key);
@example([("create", 0, 2), ("claim", 0, 2, 0, False)])
# - two open claims on one existing key row (the second skips the locked row; a
#   plain read of it would admit and then overwrite the first's holders);
@example([("create", 0, 2), ("claim", 0, 1, 0, False), ("claim", 1, 1, 0, False), END_0])
# - a claim admitted and committed between another's snapshot and its key row
#   lock (the holder's run is still at its old attempt in that snapshot);
@example([("create", 0, 2), PAUSED_0, ("claim", 1, 1, 0, False), END_1, ("gate",), END_0])
# - two claims inserting the same new key row: the second waits, then admits
#   nothing if the first commits, or takes the key if it rolls back;
@example([("create", 1, 2), WF2_0, WF2_1, ("end", 0, True), END_1])
@example([("create", 1, 2), WF2_0, WF2_1, ("end", 0, False), END_1])
# - an expired lease is taken over in its own slot, the pending run stays out.
@example([("create", 0, 2), ("claim", 0, 1, 0, False), END_0, ("touch", "expire", 0), CLAIM_2])
@given(
    actions=st.builds(
        list.__add__,
        st.lists(_CREATES, min_size=1, max_size=3),
        st.lists(ACTIONS, min_size=6, max_size=12),
    )
)
def test_interleaved_claims_never_over_admit_a_key(
    database: Database, actions: list[tuple[Any, ...]]
) -> None:
    interleaving = Interleaving(database)
    _TALLY["examples"] += 1
    _TALLY["runs"] += sum(action[2] for action in actions if action[0] == "create")
    try:
        interleaving.seed()
        for action in actions:
            interleaving.apply(action)
            interleaving.check()
        interleaving.drain()
        interleaving.check()
    finally:
        interleaving.close()
