"""Configuration, read once from the environment with strict parsers (cf. redash/settings/helpers).

Every command (`verity up`, `web`, `worker`, `db upgrade`, `doctor`) and the web app build one
`Settings` from the same sources: `--data-dir` / `VERITY_DATA_DIR` plus `DATABASE_URL`,
`REDIS_URL` and the `VERITY_*` variables. A value that does not parse is an error that names the
variable, never a silent default.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app import defaults

STATUSES_ROUTABLE = ("cleared", "in_review", "blocked")


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


def parse_boolean(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean (use true/false, yes/no, on/off or 1/0)")


def parse_int(name: str, value: str, minimum: int | None = None) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not an integer") from None
    if minimum is not None and n < minimum:
        raise SettingsError(f"{name}={n} must be >= {minimum}")
    return n


def parse_float(name: str, value: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        x = float(value.strip())
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number") from None
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise SettingsError(f"{name}={x} must be within [{lo}, {hi}]")
    return x


def parse_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    v = value.strip().lower()
    if v not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return v


def parse_intervals(name: str, value: str) -> tuple[int, ...]:
    parts = [p for p in value.replace(" ", "").split(",") if p != ""]
    if not parts:
        raise SettingsError(f"{name}={value!r} needs at least one interval (seconds, comma separated)")
    return tuple(parse_int(name, p, minimum=0) for p in parts)


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = "blobs/"
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    """None until an embedded Redis was started (`verity up` writes its URL into the data dir)."""
    storage: str = "file"
    s3: S3Settings | None = None
    secret_key: str = ""
    max_upload_bytes: int = defaults.MAX_UPLOAD_BYTES
    show_score: bool = True
    review_threshold: float | None = None
    """None: use the model manifest's recommendation."""
    block_threshold: float | None = None
    blocked_needs_review: bool = defaults.BLOCKED_NEEDS_REVIEW
    route_no_face: str = defaults.ROUTE_NO_FACE
    route_unreadable: str = defaults.ROUTE_UNREADABLE
    model: str | None = None
    device: str = "auto"
    frames: int = defaults.DEFAULT_SAMPLED_FRAMES
    queue_name: str = defaults.QUEUE_NAME
    job_timeout: int = defaults.JOB_TIMEOUT_SECONDS
    job_retry_intervals: tuple[int, ...] = defaults.JOB_RETRY_INTERVALS
    result_ttl: int = defaults.RESULT_TTL_SECONDS
    failure_ttl: int = defaults.FAILURE_TTL_SECONDS
    maintenance_interval: int = defaults.WORKER_MAINTENANCE_INTERVAL
    reconcile_interval: int = defaults.RECONCILE_INTERVAL_SECONDS
    stuck_after: int = defaults.STUCK_AFTER_SECONDS
    # platform API (issue 5)
    api_rate_limit: str = defaults.API_RATE_LIMIT
    api_max_queue_depth: int = defaults.API_MAX_QUEUE_DEPTH
    webhook_queue: str = defaults.WEBHOOK_QUEUE
    webhook_timeout: float = defaults.WEBHOOK_TIMEOUT_SECONDS
    webhook_retry_intervals: tuple[int, ...] = defaults.WEBHOOK_RETRY_INTERVALS
    webhook_allow_private: bool = False
    """Let webhooks reach private/loopback/link-local addresses (VERITY_WEBHOOK_ALLOW_PRIVATE)."""
    ops_token: str | None = None
    """VERITY_OPS_TOKEN: when set, /metrics and the details of /readyz need
    `Authorization: Bearer <token>` (readiness itself stays visible as the status code)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def redis_url_file(self) -> Path:
        return self.data_dir / "redis.url"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def require_redis_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        url = read_embedded_redis_url(self.data_dir)
        if url:
            return url
        raise SettingsError(
            f"no Redis: set REDIS_URL, or start the embedded one with `verity up --data-dir {self.data_dir}`"
        )


def read_embedded_redis_url(data_dir: Path) -> str | None:
    f = data_dir / "redis.url"
    if f.is_file():
        return f.read_text().strip() or None
    return None


def _secret_key(data_dir: Path, env: Mapping[str, str]) -> str:
    """VERITY_SECRET_KEY, else one generated once and kept in the data dir (shared by all web
    processes started on it, so CSRF tokens stay valid across gunicorn workers and restarts)."""
    if env.get("VERITY_SECRET_KEY"):
        return env["VERITY_SECRET_KEY"]
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # first writer wins; a racing process reads the winner's key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def load_settings(env: Mapping[str, str] | None = None, data_dir: str | os.PathLike | None = None,
                  **overrides: Any) -> Settings:
    """Parse the environment (default os.environ) once; `overrides` win over everything."""
    env = os.environ if env is None else env
    dd = Path(data_dir or env.get("VERITY_DATA_DIR") or defaults.DATA_DIR).resolve()

    def get(name: str) -> str | None:
        v = env.get(name)
        return v if v not in (None, "") else None

    database_url = get("DATABASE_URL") or f"sqlite:///{dd / 'verity.db'}"
    storage = parse_choice("VERITY_STORAGE", get("VERITY_STORAGE") or "file", ("file", "s3"))
    s3 = None
    if storage == "s3":
        bucket = get("VERITY_S3_BUCKET")
        if not bucket:
            raise SettingsError("VERITY_STORAGE=s3 needs VERITY_S3_BUCKET")
        s3 = S3Settings(
            bucket=bucket,
            prefix=get("VERITY_S3_PREFIX") or "blobs/",
            endpoint_url=get("VERITY_S3_ENDPOINT_URL"),
            region=get("VERITY_S3_REGION") or get("AWS_DEFAULT_REGION"),
        )
    kw: dict[str, Any] = {
        "data_dir": dd,
        "database_url": database_url,
        "redis_url": get("REDIS_URL"),
        "storage": storage,
        "s3": s3,
    }
    if (v := get("VERITY_MAX_UPLOAD_BYTES")) is not None:
        kw["max_upload_bytes"] = parse_int("VERITY_MAX_UPLOAD_BYTES", v, minimum=1)
    if (v := get("VERITY_SHOW_SCORE")) is not None:
        kw["show_score"] = parse_boolean("VERITY_SHOW_SCORE", v)
    if (v := get("VERITY_REVIEW_THRESHOLD")) is not None:
        kw["review_threshold"] = parse_float("VERITY_REVIEW_THRESHOLD", v, 0.0, 1.0)
    if (v := get("VERITY_BLOCK_THRESHOLD")) is not None:
        kw["block_threshold"] = parse_float("VERITY_BLOCK_THRESHOLD", v, 0.0, 1.0)
    if (v := get("VERITY_BLOCKED_NEEDS_REVIEW")) is not None:
        kw["blocked_needs_review"] = parse_boolean("VERITY_BLOCKED_NEEDS_REVIEW", v)
    if (v := get("VERITY_ROUTE_NO_FACE")) is not None:
        kw["route_no_face"] = parse_choice("VERITY_ROUTE_NO_FACE", v, STATUSES_ROUTABLE)
    if (v := get("VERITY_ROUTE_UNREADABLE")) is not None:
        kw["route_unreadable"] = parse_choice("VERITY_ROUTE_UNREADABLE", v, STATUSES_ROUTABLE)
    if (v := get("VERITY_MODEL")) is not None:
        kw["model"] = v
    if (v := get("VERITY_DEVICE")) is not None:
        kw["device"] = parse_choice("VERITY_DEVICE", v, ("auto", "cpu", "cuda"))
    if (v := get("VERITY_ORT_SPIN")) is not None:
        parse_boolean("VERITY_ORT_SPIN", v)  # read by the detector runtime; checked here at start
    if (v := get("VERITY_FRAMES")) is not None:
        kw["frames"] = parse_int("VERITY_FRAMES", v, minimum=1)
        if kw["frames"] > defaults.MAX_SAMPLED_FRAMES:
            raise SettingsError(f"VERITY_FRAMES must be <= {defaults.MAX_SAMPLED_FRAMES}")
    if (v := get("VERITY_QUEUE")) is not None:
        kw["queue_name"] = v
    if (v := get("VERITY_JOB_TIMEOUT")) is not None:
        kw["job_timeout"] = parse_int("VERITY_JOB_TIMEOUT", v, minimum=1)
    if (v := get("VERITY_JOB_RETRY_INTERVALS")) is not None:
        kw["job_retry_intervals"] = parse_intervals("VERITY_JOB_RETRY_INTERVALS", v)
    if (v := get("VERITY_MAINTENANCE_INTERVAL")) is not None:
        kw["maintenance_interval"] = parse_int("VERITY_MAINTENANCE_INTERVAL", v, minimum=1)
    if (v := get("VERITY_RECONCILE_INTERVAL")) is not None:
        kw["reconcile_interval"] = parse_int("VERITY_RECONCILE_INTERVAL", v, minimum=1)
    if (v := get("VERITY_STUCK_AFTER")) is not None:
        kw["stuck_after"] = parse_int("VERITY_STUCK_AFTER", v, minimum=0)
    if (v := get("VERITY_API_RATE_LIMIT")) is not None:
        kw["api_rate_limit"] = v
    if (v := get("VERITY_API_MAX_QUEUE_DEPTH")) is not None:
        kw["api_max_queue_depth"] = parse_int("VERITY_API_MAX_QUEUE_DEPTH", v, minimum=0)
    if (v := get("VERITY_WEBHOOK_TIMEOUT")) is not None:
        kw["webhook_timeout"] = parse_float("VERITY_WEBHOOK_TIMEOUT", v, 0.1, 120.0)
    if (v := get("VERITY_WEBHOOK_RETRY_INTERVALS")) is not None:
        kw["webhook_retry_intervals"] = parse_intervals("VERITY_WEBHOOK_RETRY_INTERVALS", v)
    if (v := get("VERITY_WEBHOOK_ALLOW_PRIVATE")) is not None:
        kw["webhook_allow_private"] = parse_boolean("VERITY_WEBHOOK_ALLOW_PRIVATE", v)
    if (v := get("VERITY_OPS_TOKEN")) is not None:
        if len(v) < 16:
            raise SettingsError("VERITY_OPS_TOKEN must be at least 16 characters")
        kw["ops_token"] = v
    kw.update(overrides)
    if (kw.get("review_threshold") is not None and kw.get("block_threshold") is not None
            and kw["block_threshold"] < kw["review_threshold"]):
        raise SettingsError("VERITY_BLOCK_THRESHOLD must be >= VERITY_REVIEW_THRESHOLD")
    if "secret_key" not in kw:
        kw["secret_key"] = _secret_key(dd, env)
    return Settings(**kw)


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs and command output."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ValueError:  # sqlalchemy.exc.ArgumentError is a ValueError
        return url.split("@")[-1]
