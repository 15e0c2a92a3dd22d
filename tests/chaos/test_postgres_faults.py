"""PostgreSQL stopped for a few seconds under a stream of uploads. Only with TEST_DATABASE_URL set
(the PostgreSQL runs are opted into), and only on a private PostgreSQL this test starts itself
(initdb into a temp dir with Debian's binaries, on a free port): the machine's shared server on
5432 is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from chaoslib import distinct_faces, free_port, wait_for
from test_faults import ABANDONED_JOB_RECOVERY, Stream

PG_BIN = Path(os.environ.get("VERITY_PG_BIN", "/usr/lib/postgresql/15/bin"))

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="PostgreSQL runs need TEST_DATABASE_URL"),
    pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason=f"no PostgreSQL binaries in {PG_BIN}"),
]


class PrivatePostgres:
    """initdb + pg_ctl as the `postgres` account when run as root (initdb refuses root)."""

    def __init__(self):
        # Not under pytest's tmp dir: the postgres account must be able to reach it (0700 parents).
        self.root = Path(tempfile.mkdtemp(prefix="verity-pg-"))
        self.dir = self.root / "pg"
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root and no runuser to drop to the postgres account")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.root.chmod(0o755)
        self.dir.mkdir()
        if self.prefix:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run([str(PG_BIN / "initdb"), "-D", str(self.dir), "-U", "postgres", "-A", "trust", "--no-sync"])
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str], check: bool = True):
        return subprocess.run(self.prefix + cmd, capture_output=True, text=True, timeout=60, check=check)

    def start(self) -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-l", str(self.dir / "log"), "-w", "-t", "30",
                   "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-m", mode, "-w", "-t", "30", "stop"], check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def test_postgres_stopped_briefly_mid_stream(service_factory):
    pg = PrivatePostgres()
    pg.start()
    try:
        svc = service_factory(workers=1, database_url=pg.url)
        svc.start_redis()
        svc.start_web()
        svc.start_workers()
        key = svc.create_key("chaos")
        files = distinct_faces(12)
        with Stream(svc, key, files, rate=3.0) as stream:
            wait_for(lambda: len(stream.accepted) >= 4, 60, "a third of the stream")
            svc.dispose_db()
            pg.stop("immediate")  # a crash, as far as PostgreSQL is concerned
            time.sleep(3.0)
            pg.start()
        after = [svc.upload(key, data) for data in distinct_faces(15)[12:]]  # the door works again
        assert [st for st, _ in after] == [202] * 3, after
        stream.accepted += [b["id"] for _, b in after]
        print(f"errors while PostgreSQL was down: {sorted({e[:60] for e in stream.errors})}")
        svc.wait_settled(ABANDONED_JOB_RECOVERY + 30)
        refused = [e for e in stream.errors if not e.startswith("0 ")]
        assert all(e.split()[0] == "503" for e in refused), refused[:5]  # unavailable + Retry-After, never 500
        svc.ledger(stream.accepted).check("postgres-stop", client_errors=len(stream.errors))
    finally:
        pg.remove()
