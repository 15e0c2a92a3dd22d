"""Configuration, read once per process from the environment with strict parsers (cf.
redash/settings/helpers), then passed down: nothing below reads the environment again.

Every command (`verity up`, `web`, `worker`, `db upgrade`, `doctor`, `scan`...) and the web app
build one `Settings` from the same sources: `--data-dir` / `VERITY_DATA_DIR` plus `DATABASE_URL`,
`REDIS_URL` and the `VERITY_*` variables (the `ENVIRONMENT` table). A value that does not parse is
an error that names the variable, never a silent default.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from core import defaults
from detector import limits
from detector.limits import DEVICES

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
    known_fake_needs_review: bool = defaults.KNOWN_FAKE_NEEDS_REVIEW
    route_declared_synthetic: str = defaults.ROUTE_DECLARED_SYNTHETIC
    c2pa_trust_anchors: tuple[Path, ...] = ()
    """PEM files (or folders of them) C2PA signers must chain to for a manifest to count as
    verified (VERITY_C2PA_TRUST_ANCHORS); none: no manifest is verified, each is still shown."""
    model: str | None = None
    """A model name under `models_dir`, a directory, or a model.json; None: the shipped default."""
    models_dir: Path | None = None
    """Where named models live; None: the repository's `models/`."""
    device: str = "auto"
    ort_spin: bool = False
    """Let idle onnxruntime threads spin-wait (detector/runtime.py says when that pays)."""
    ort_threads: int | None = None
    """onnxruntime threads per detector session; None: the CPUs this process may use, shared out
    among the workers `verity worker -n N` / `verity up` start on this host."""
    frames: int = limits.DEFAULT_SAMPLED_FRAMES
    queue_name: str = defaults.QUEUE_NAME
    job_timeout: int = defaults.JOB_TIMEOUT_SECONDS
    job_retry_intervals: tuple[int, ...] = defaults.JOB_RETRY_INTERVALS
    result_ttl: int = defaults.RESULT_TTL_SECONDS
    failure_ttl: int = defaults.FAILURE_TTL_SECONDS
    maintenance_interval: int = defaults.WORKER_MAINTENANCE_INTERVAL
    reconcile_interval: int = defaults.RECONCILE_INTERVAL_SECONDS
    stuck_after: int = defaults.STUCK_AFTER_SECONDS
    api_rate_limit: str = defaults.API_RATE_LIMIT
    api_max_queue_depth: int = defaults.API_MAX_QUEUE_DEPTH
    webhook_queue: str = defaults.WEBHOOK_QUEUE
    live_queue: str = defaults.LIVE_QUEUE_NAME
    """The queue of live segments (VERITY_LIVE_QUEUE); detector workers take it first."""
    webhook_timeout: float = defaults.WEBHOOK_TIMEOUT_SECONDS
    webhook_retry_intervals: tuple[int, ...] = defaults.WEBHOOK_RETRY_INTERVALS
    webhook_allow_private: bool = False
    """Let webhooks reach private/loopback/link-local addresses (VERITY_WEBHOOK_ALLOW_PRIVATE)."""
    ops_token: str | None = None
    """VERITY_OPS_TOKEN: when set, /metrics and the details of /readyz need
    `Authorization: Bearer <token>` (readiness itself stays visible as the status code)."""
    cookie_secure: bool = True
    """Session cookies only over https (VERITY_COOKIE_SECURE); localhost is exempt in browsers."""
    proxy_hops: int = 0
    """Reverse proxies in front of the web nodes whose X-Forwarded-For/-Proto/-Host are trusted
    (VERITY_PROXY_HOPS): the client address the page's limits and the audit log use."""
    page_access: str = defaults.PAGE_ACCESS
    """Who may use the upload page: open, users or token (core/defaults.py)."""
    page_rate_limit: str = defaults.PAGE_RATE_LIMIT
    page_max_bytes_per_day: int = defaults.PAGE_MAX_BYTES_PER_DAY
    log_level: str = defaults.LOG_LEVEL
    access_log: str | None = None
    """VERITY_ACCESS_LOG: where gunicorn writes its access log ("-" for stderr); None: none."""

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


def generated_secret(path: Path) -> str:
    """The secret kept in `path` (mode 0600), generated once: the first process to write it wins
    and a racing process reads the winner's."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _secret_key(data_dir: Path, env: Mapping[str, str]) -> str:
    """VERITY_SECRET_KEY, else one generated once and kept in the data dir (shared by all web
    processes started on it, so CSRF tokens stay valid across gunicorn workers and restarts)."""
    if env.get("VERITY_SECRET_KEY"):
        return env["VERITY_SECRET_KEY"]
    return generated_secret(data_dir / "secret_key")


def ops_token_file(data_dir: Path) -> Path:
    """Where `verity up` keeps the operator token it generated (VERITY_OPS_TOKEN unset)."""
    return data_dir / "ops_token"


def _ops_token(name: str, value: str) -> str:
    if len(value) < 16:
        raise SettingsError(f"{name} must be at least 16 characters")
    return value


def _frames(name: str, value: str) -> int:
    n = parse_int(name, value, minimum=1)
    if n > limits.MAX_SAMPLED_FRAMES:
        raise SettingsError(f"{name} must be <= {limits.MAX_SAMPLED_FRAMES}")
    return n


def _text(_name: str, value: str) -> str:
    return value


def _rate_limit(name: str, value: str) -> str:
    from limits import parse_many

    try:
        if not parse_many(value):
            raise ValueError
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a rate limit (examples: 100/minute, 10/second;1000/day)") from None
    return value


def _pem_paths(name: str, value: str) -> tuple[Path, ...]:
    """Comma-separated PEM files or folders (every *.pem and *.crt in them), each checked now."""
    from detector.provenance import load_trust_anchors

    files: list[Path] = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        path = Path(part).expanduser()
        if path.is_dir():
            files += sorted(f for f in path.iterdir() if f.suffix in (".pem", ".crt"))
        elif path.is_file():
            files.append(path)
        else:
            raise SettingsError(f"{name}: {path} does not exist")
    try:
        load_trust_anchors(files)
    except (OSError, ValueError) as e:
        raise SettingsError(f"{name}: {e}") from None
    return tuple(files)


def _log_level(name: str, value: str) -> str:
    return parse_choice(name, value, ("debug", "info", "warning", "error", "critical")).upper()


ENVIRONMENT: tuple[tuple[str, str, Callable[[str, str], Any]], ...] = (
    ("DATABASE_URL", "database_url", _text),
    ("REDIS_URL", "redis_url", _text),
    ("VERITY_MAX_UPLOAD_BYTES", "max_upload_bytes", partial(parse_int, minimum=1)),
    ("VERITY_SHOW_SCORE", "show_score", parse_boolean),
    ("VERITY_REVIEW_THRESHOLD", "review_threshold", partial(parse_float, lo=0.0, hi=1.0)),
    ("VERITY_BLOCK_THRESHOLD", "block_threshold", partial(parse_float, lo=0.0, hi=1.0)),
    ("VERITY_BLOCKED_NEEDS_REVIEW", "blocked_needs_review", parse_boolean),
    ("VERITY_KNOWN_FAKE_NEEDS_REVIEW", "known_fake_needs_review", parse_boolean),
    ("VERITY_ROUTE_DECLARED_SYNTHETIC", "route_declared_synthetic", partial(parse_choice, choices=STATUSES_ROUTABLE)),
    ("VERITY_C2PA_TRUST_ANCHORS", "c2pa_trust_anchors", _pem_paths),
    ("VERITY_ROUTE_NO_FACE", "route_no_face", partial(parse_choice, choices=STATUSES_ROUTABLE)),
    ("VERITY_ROUTE_UNREADABLE", "route_unreadable", partial(parse_choice, choices=STATUSES_ROUTABLE)),
    ("VERITY_MODEL", "model", _text),
    ("VERITY_MODELS_DIR", "models_dir", lambda _name, v: Path(v)),
    ("VERITY_DEVICE", "device", partial(parse_choice, choices=DEVICES)),
    ("VERITY_ORT_SPIN", "ort_spin", parse_boolean),
    ("VERITY_ORT_THREADS", "ort_threads", partial(parse_int, minimum=1)),
    ("VERITY_FRAMES", "frames", _frames),
    ("VERITY_QUEUE", "queue_name", _text),
    ("VERITY_LIVE_QUEUE", "live_queue", _text),
    ("VERITY_JOB_TIMEOUT", "job_timeout", partial(parse_int, minimum=1)),
    ("VERITY_JOB_RETRY_INTERVALS", "job_retry_intervals", parse_intervals),
    ("VERITY_MAINTENANCE_INTERVAL", "maintenance_interval", partial(parse_int, minimum=1)),
    ("VERITY_RECONCILE_INTERVAL", "reconcile_interval", partial(parse_int, minimum=1)),
    ("VERITY_STUCK_AFTER", "stuck_after", partial(parse_int, minimum=0)),
    ("VERITY_API_RATE_LIMIT", "api_rate_limit", _rate_limit),
    ("VERITY_API_MAX_QUEUE_DEPTH", "api_max_queue_depth", partial(parse_int, minimum=0)),
    ("VERITY_WEBHOOK_TIMEOUT", "webhook_timeout", partial(parse_float, lo=0.1, hi=120.0)),
    ("VERITY_WEBHOOK_RETRY_INTERVALS", "webhook_retry_intervals", parse_intervals),
    ("VERITY_WEBHOOK_ALLOW_PRIVATE", "webhook_allow_private", parse_boolean),
    ("VERITY_OPS_TOKEN", "ops_token", _ops_token),
    ("VERITY_COOKIE_SECURE", "cookie_secure", parse_boolean),
    ("VERITY_LOG_LEVEL", "log_level", _log_level),
    ("VERITY_PROXY_HOPS", "proxy_hops", partial(parse_int, minimum=0)),
    ("VERITY_PAGE_ACCESS", "page_access", partial(parse_choice, choices=("open", "users", "token"))),
    ("VERITY_PAGE_RATE_LIMIT", "page_rate_limit", _rate_limit),
    ("VERITY_PAGE_MAX_BYTES_PER_DAY", "page_max_bytes_per_day", partial(parse_int, minimum=1)),
    ("VERITY_ACCESS_LOG", "access_log", _text),
)
"""(variable, Settings field, parser): every variable Verity reads, and the only place it is read.
A parser gets the variable's name and value and raises SettingsError naming the variable."""


def _storage(env: Mapping[str, str]) -> dict[str, Any]:
    storage = parse_choice("VERITY_STORAGE", env.get("VERITY_STORAGE") or "file", ("file", "s3"))
    if storage == "file":
        return {"storage": storage}
    bucket = env.get("VERITY_S3_BUCKET")
    if not bucket:
        raise SettingsError("VERITY_STORAGE=s3 needs VERITY_S3_BUCKET")
    return {"storage": storage, "s3": S3Settings(
        bucket=bucket, prefix=env.get("VERITY_S3_PREFIX") or "blobs/",
        endpoint_url=env.get("VERITY_S3_ENDPOINT_URL") or None,
        region=env.get("VERITY_S3_REGION") or env.get("AWS_DEFAULT_REGION") or None)}


def load_settings(env: Mapping[str, str] | None = None, data_dir: str | os.PathLike | None = None, *,
                  make_secret: bool = True, **overrides: Any) -> Settings:
    """Parse the environment (default os.environ) once; `overrides` win over everything. Empty
    variables count as unset. Without `make_secret` (the offline detector commands), no secret key
    is generated into the data dir when VERITY_SECRET_KEY is unset."""
    env = {k: v for k, v in (os.environ if env is None else env).items() if v != ""}
    dd = Path(data_dir or env.get("VERITY_DATA_DIR") or defaults.DATA_DIR).resolve()
    kw: dict[str, Any] = {"data_dir": dd, "database_url": f"sqlite:///{dd / 'verity.db'}", "redis_url": None,
                          **_storage(env)}
    for name, attr, parse in ENVIRONMENT:
        if name in env:
            kw[attr] = parse(name, env[name])
    if "ops_token" not in kw and ops_token_file(dd).is_file():
        kw["ops_token"] = ops_token_file(dd).read_text().strip() or None
    kw.update(overrides)
    if (kw.get("review_threshold") is not None and kw.get("block_threshold") is not None
            and kw["block_threshold"] < kw["review_threshold"]):
        raise SettingsError("VERITY_BLOCK_THRESHOLD must be >= VERITY_REVIEW_THRESHOLD")
    if "secret_key" not in kw:
        kw["secret_key"] = _secret_key(dd, env) if make_secret else env.get("VERITY_SECRET_KEY", "")
    return Settings(**kw)


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs and command output."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ValueError:  # sqlalchemy.exc.ArgumentError is a ValueError
        return url.split("@")[-1]
