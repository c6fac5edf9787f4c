"""What the query service holds while it runs: the live release's query workers, the audit log,
the roles and policies, the output desk and the user store (`ServiceState`).

The API's route modules (`service.app`, `service.tables_api`, `service.output_api`,
`service.portal`) all take a `ServiceState`; it lives here, below them, so none of them
imports another to reach it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from uprnlink.errors import AuditError, ConfigError
from uprnlink.governance.audit import AuditLog, open_audit_log
from uprnlink.publish import queries
from uprnlink.publish.access import Identity, build_table, read_roles, table_categories
from uprnlink.publish.database import read_policy
from uprnlink.publish.outputs import read_role_rights
from uprnlink.publish.tabulation import TableAnswer, read_table_policy
from uprnlink.service.failures import FailureCounter
from uprnlink.service.identities import (
    AuthenticationError,
    Authenticator,
    TokenAuthenticator,
    UserStore,
)
from uprnlink.service.limits import LimitSettings
from uprnlink.service.outputs import OutputDesk, OutputStore, read_output_checking
from uprnlink.service.workers import PoolSettings, WorkerPool
from uprnlink.settings import RunSettings

__all__ = ["ServiceState", "check_sealed_service"]

log = logging.getLogger("uprnlink.service")


@dataclass
class _Live:
    path: str
    pool: WorkerPool
    tables: dict[str, TableAnswer] = field(default_factory=dict)
    categories: dict[str, dict[str, list[str]]] | None = None
    jobs: WorkerPool | None = None  # analysts' jobs: their own niced workers, made when needed


class ServiceState:
    """What the service holds: a pool of query workers on the live analysts' database (a new
    pool when a new release goes live; the old one finishes its queries, then stops), the
    audit log, the roles, the disclosure policy and the user store."""

    def __init__(
        self,
        settings: RunSettings,
        audit: AuditLog | None = None,
        authenticator: Authenticator | None = None,
        pool_settings: PoolSettings | None = None,
    ) -> None:
        self.settings = settings
        self.audit = audit or open_audit_log(settings)
        # Refuse to start with an audit key the log does not know: nothing could be logged;
        # on a log that is not forward-sealed, or with the IG lead's seed in reach.
        self.audit.check_key()
        check_sealed_service(self.audit)
        self.failures = FailureCounter(
            self.audit, window_seconds=settings.service.failure_window_seconds
        )
        self.limits = LimitSettings.from_service(settings.service)
        self.portal_sessions: Any = None  # the portal's sessions, for the per-user limits
        self.store = UserStore(settings.users_file)
        self.authenticator = authenticator or TokenAuthenticator(self.store)
        self.roles = read_roles(settings.policy_path)
        self.policy = read_policy(settings.policy_path)
        self.rights = read_role_rights(settings.policy_path)
        self.table_policy = read_table_policy(settings.policy_path)
        checking = read_output_checking(settings.policy_path)
        self.desk = OutputDesk(
            OutputStore(settings.out_dir / "outputs"),
            self.audit,
            self.roles,
            self.rights,
            self.policy,
            checkers_required=checking.checkers_required,
            max_waiting_jobs=checking.max_waiting_jobs,
        )
        self.pool_settings = pool_settings or PoolSettings(
            workers=settings.service.workers,
            check_timeout=settings.service.check_timeout_seconds,
            max_bytes=settings.service.max_answer_mib * 2**20,
            per_user=settings.service.workers_per_user,
        )
        self._lock = threading.Lock()
        self._live: _Live | None = None

    def live(self) -> _Live:
        """The live release's workers (the one `out/uprnlink.duckdb` points at now); queries
        already running on the previous release finish there."""
        path = os.path.realpath(self.settings.database_path)
        with self._lock:
            if self._live is None or self._live.path != path:
                if not Path(path).exists():
                    raise ConfigError("no release is live yet: run the pipeline first")
                old = self._live
                self._live = _Live(path, WorkerPool(Path(path), self.pool_settings))
                if old is not None:
                    old.pool.retire()
                    if old.jobs is not None:
                        old.jobs.retire()
                log.info("serving release %s", Path(path).parent.name)
                threading.Thread(target=self._warm, args=(self._live,), daemon=True).start()
            return self._live

    def job_pool(self) -> WorkerPool:
        """The live release's job workers: never the table workers, one per job runner, each
        at the lowest CPU priority with one DuckDB thread, so a job (however long, whatever
        its data) neither holds up nor slows anyone's tables."""
        live = self.live()
        with self._lock:
            if live.jobs is None:
                live.jobs = WorkerPool(
                    Path(live.path),
                    dataclasses.replace(self.pool_settings, workers=2, per_user=1, nice=19),
                )
            return live.jobs

    def categories(self, live: _Live) -> dict[str, dict[str, list[str]]]:
        """The live release's category lists, read once."""
        if live.categories is None:
            live.categories = table_categories(
                live.pool, timeout=self.settings.service.timeout_seconds
            )
        return live.categories

    def _warm(self, live: _Live) -> None:
        """Read the release's categories and build every named question's table before anyone
        asks (a release never changes, so each is built once)."""
        try:
            known = self.categories(live)
            for named in queries.list_queries():
                spec = named.spec
                spec.check(known, self.table_policy.limits)
                key = json.dumps(spec.to_dict(), sort_keys=True)
                live.tables[key] = build_table(
                    live.pool,
                    spec,
                    self.table_policy,
                    known,
                    timeout=self.settings.service.timeout_seconds,
                )
        except Exception as exc:  # an analyst asking will see (and the log record) it
            log.warning("named questions not prepared: %s", type(exc).__name__)

    def start_jobs(self) -> None:
        """Run the jobs a previous service left queued or running."""
        for record in self.desk.waiting_jobs():
            self.desk.start(
                record,
                self.job_pool,
                max_rows=self.settings.service.max_rows,
                timeout=self.settings.service.timeout_seconds,
            )

    def close(self) -> None:
        self.desk.close()
        with self._lock:
            if self._live is not None:
                self._live.pool.close()
                if self._live.jobs is not None:
                    self._live.jobs.close()
                self._live = None

    def identify(self, authorization: str | None, request: Request) -> Identity:
        # A refusal is counted in the audit log by the failure counter (every 401, never
        # dropped: uprnlink.service.failures), not logged one entry per attempt.
        try:
            return self.authenticator.authenticate(authorization)
        except AuthenticationError as exc:
            raise HTTPException(status_code=401, detail=str(exc)) from None

    def still_allowed(self, who: Identity) -> Callable[[], bool]:
        """Asked again before a query runs and before its answer leaves: is the token still
        active (a revocation takes effect mid-query)?"""

        def check() -> bool:
            return any(u.token_id == who.token_id and u.active for u in self.store.users())

        return check


def check_sealed_service(audit: AuditLog) -> None:
    """What the service refuses to start with: an audit log that is not forward-sealed, a
    witness file it cannot append to, or the IG lead's verification seed in its environment
    (the seed derives every sealing key, so it must never be where the service runs)."""
    from uprnlink.governance.witness import check_sink_writable
    from uprnlink.privacy.sealing import SEED_ENV

    if os.environ.get(SEED_ENV):
        raise AuditError(
            f"{SEED_ENV} is set in the query service's environment: the verification seed "
            "must never be on the service's host (rule: seed_location)"
        )
    audit.require_sealing()
    for sink in audit.witness_sinks:
        check_sink_writable(sink)
