"""The checks scripts/test-image runs inside a built image, with the image's own Python (standard
library and the installed project only). Each step prints what it saw; any failure exits non-zero
with a line that starts with FAIL.

    python image_checks.py photo SRC DST      a 1280x720 JPEG with the face photo SRC pasted in
    python image_checks.py cpu --port P --photo DST
                                              against `verity up` on 127.0.0.1:P: doctor, scan,
                                              a key, an upload through the API and its verdict,
                                              the pages and the committed OpenAPI spec
    python image_checks.py gpu                onnxruntime-gpu alone, with the CUDA provider
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid


class CheckFailed(Exception):
    pass


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(*cmd: str, ok=(0,), timeout: float = 300) -> str:
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    out = proc.stdout + proc.stderr
    print(out.rstrip(), flush=True)
    if proc.returncode not in ok:
        raise CheckFailed(f"`{' '.join(cmd)}` exited with {proc.returncode}")
    return proc.stdout


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def make_photo(src: str, dst: str) -> None:
    from PIL import Image

    face = Image.open(src).convert("RGB")
    height = 480
    face = face.resize((round(face.width * height / face.height), height), Image.BILINEAR)
    canvas = Image.new("RGB", (1280, 720), (96, 110, 120))
    canvas.paste(face, ((1280 - face.width) // 2, (720 - face.height) // 2))
    canvas.save(dst, "JPEG", quality=90)
    print(f"{dst}: 1280x720 JPEG, the face of {src.rsplit('/', 1)[-1]} {face.width}x{height} in the middle")


def wait_healthy(base: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, _, body = http("GET", base + "/healthz", timeout=5)
            if status == 200:
                print(f"GET /healthz -> 200 {body.decode()[:200]}")
                return
            last = f"{status} {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(1)
    raise CheckFailed(f"/healthz did not answer 200 within {timeout:.0f}s (last: {last})")


def doctor() -> None:
    # The worker registers a few seconds after the web server answers: wait for it (only for it).
    deadline = time.monotonic() + 120
    while True:
        out = run("verity", "doctor", ok=(0, 1))
        failed = [line for line in out.splitlines() if line.startswith("[FAIL]")]
        if failed:
            raise CheckFailed("verity doctor: " + "; ".join(failed))
        if "0 live worker(s)" not in out or time.monotonic() > deadline:
            break
        time.sleep(3)
    for needle in ("all checks passed", "(sha256 verified)", "reachable, at revision", "CPUExecutionProvider"):
        if needle not in out:
            raise CheckFailed(f"verity doctor did not report {needle!r}")
    if "0 live worker(s)" in out:
        raise CheckFailed("verity doctor sees no live worker")


def scan(photo: str) -> None:
    run("verity", "scan", photo)
    row = json.loads(run("verity", "scan", "--json", photo).strip().splitlines()[-1])
    if row.get("label") in (None, "unreadable") or row.get("score") is None:
        raise CheckFailed(f"verity scan --json gave no score: {row}")
    if not row.get("faces"):
        raise CheckFailed(f"verity scan found no face in {photo}: {row}")


def multipart(field: str, filename: str, data: bytes, mime: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {mime}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(base: str, photo: str) -> dict:
    key = run("verity", "key", "create", "image-test", "--show-score").strip().splitlines()[-1].strip()
    auth = {"Authorization": f"Bearer {key}"}
    with open(photo, "rb") as f:
        body, ctype = multipart("file", "face.jpg", f.read(), "image/jpeg")
    status, _, raw = http("POST", base + "/api/v1/uploads", body, {**auth, "Content-Type": ctype})
    print(f"POST /api/v1/uploads -> {status} {raw.decode()[:300]}")
    if status not in (200, 201, 202):
        raise CheckFailed(f"the upload was refused: {status}")
    upload_id = json.loads(raw)["id"]
    deadline = time.monotonic() + 240
    while True:
        status, _, raw = http("GET", f"{base}/api/v1/uploads/{upload_id}?wait=25", headers=auth, timeout=40)
        if status != 200:
            raise CheckFailed(f"GET /api/v1/uploads/{upload_id} -> {status} {raw[:300]!r}")
        got = json.loads(raw)
        print(f"GET /api/v1/uploads/{upload_id}?wait=25 -> status {got['status']}, decision {got['decision']}")
        if got["status"] not in ("queued", "analyzing") and got["decision"] is not None:
            return got
        if time.monotonic() > deadline:
            raise CheckFailed(f"no verdict within 240s: {got}")


def pages(base: str) -> None:
    status, headers, _ = http("GET", base + "/")
    print(f"GET / -> {status} {headers.get('Location', '')}")
    if status not in (200, 302):
        raise CheckFailed(f"GET / -> {status}")
    status, headers, _ = http("GET", base + "/review/")
    location = headers.get("Location", "")
    print(f"GET /review/ -> {status} {location}")
    if status not in (200, 302):
        raise CheckFailed(f"GET /review/ -> {status}")
    if status == 302:  # the login page renders from the wheel's templates
        target = location if location.startswith("http") else base + location
        status, _, body = http("GET", target)
        print(f"GET {location} -> {status}, {len(body)} bytes, a form: {b'<form' in body}")
        if status != 200 or b"<form" not in body:
            raise CheckFailed(f"the login page did not render: {status}")
    status, _, body = http("GET", base + "/api/v1/openapi.json")
    paths = len(json.loads(body).get("paths", {})) if status == 200 else 0
    print(f"GET /api/v1/openapi.json -> {status}, {paths} paths")
    if status != 200 or not paths:
        raise CheckFailed("the OpenAPI spec is not served")


def cpu(port: int, photo: str) -> None:
    base = f"http://127.0.0.1:{port}"
    step("verity up answers")
    wait_healthy(base)
    step("verity doctor")
    doctor()
    step("verity scan")
    scan(photo)
    step("pages and the OpenAPI spec (templates, static files and openapi.json from the wheel)")
    pages(base)
    step("an upload through the API, and its verdict")
    verdict = upload(base, photo)
    print("VERDICT " + json.dumps(verdict, indent=2))


def gpu() -> None:
    step("onnxruntime-gpu alone")
    run("pip", "show", "onnxruntime-gpu")
    proc = subprocess.run(["pip", "show", "onnxruntime"], capture_output=True, text=True, check=False)
    print(f"$ pip show onnxruntime -> exit {proc.returncode} {proc.stderr.strip()}")
    if proc.returncode == 0:
        raise CheckFailed("the CPU wheel onnxruntime is installed beside onnxruntime-gpu")
    out = run(sys.executable, "-c", "import onnxruntime; print(onnxruntime.get_available_providers())")
    if "CUDAExecutionProvider" not in out:
        raise CheckFailed("onnxruntime offers no CUDAExecutionProvider")
    step("the CUDA and cuDNN libraries the wheel brings (loading them needs no GPU; running does)")
    run(sys.executable, "-c", "import onnxruntime as o; o.preload_dlls(); print('preload_dlls: ok')", ok=(0, 1))
    step("verity doctor (no GPU on this machine: Redis and the database are not running either)")
    run("verity", "doctor", ok=(0, 1))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    ph = sub.add_parser("photo")
    ph.add_argument("src")
    ph.add_argument("dst")
    c = sub.add_parser("cpu")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--photo", required=True)
    sub.add_parser("gpu")
    a = p.parse_args()
    if a.cmd == "photo":
        make_photo(a.src, a.dst)
        return
    try:
        if a.cmd == "cpu":
            cpu(a.port, a.photo)
        else:
            gpu()
    except (CheckFailed, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
    print("\nOK: every check passed", flush=True)


if __name__ == "__main__":
    main()
