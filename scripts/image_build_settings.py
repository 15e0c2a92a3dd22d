#!/usr/bin/env python3
"""The build machine's pip and apt settings, laid out for a buildah build that must reach the
package registries as this machine does, without baking any of it into the image.

    python3 scripts/image_build_settings.py STAGING_DIR

writes into STAGING_DIR (a fresh, empty folder outside the repository):

  pip.conf           the machine's effective pip settings (`pip config list`: the config files and
                     the PIP_* environment) merged into one file, every local path in it rewritten
                     to where the build sees it (below /mnt)
  files/             copies of the small files those settings name (CA bundle, constraints)
  host/PATH          empty mount points for the local folders they name (find-links, file://
                     indexes), each bind-mounted read-only at /mnt/host/PATH
  apt.conf, apt/     the machine's apt sources and apt configuration (copies), and an apt.conf
                     that points apt at them instead of /etc/apt, plus one line pointing apt's
                     HTTPS at the CA bundle

and prints one buildah `--volume` argument a line: the folder itself at /mnt, the local folders
below it. /mnt exists, empty, in every Debian base image, so no RUN step leaves a mount point
behind, and nothing is mounted over /etc/apt, where dpkg must be free to write. The Dockerfile
reads them through `--build-arg PIP_CONFIG_FILE=/mnt/pip.conf` (build stages) and
`--build-arg APT_CONFIG=/mnt/apt.conf` (the runtime stage's apt-get).
"""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

MNT = "/mnt"
APT_SUFFIXES = (".list", ".sources")


def pip_settings() -> dict[str, dict[str, str]]:
    """{section: {key: value}} as pip sees it here: files first, then the environment over them."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=True,
                         capture_output=True, text=True).stdout
    files: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, raw = line.partition("=")
        if not sep or "." not in name:
            continue
        section, key = name.rsplit(".", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw.strip("'\"")
        if section == ":env:":
            env[key] = str(value)
        else:
            files.setdefault(section, {})[key] = str(value)
    merged = files
    merged.setdefault("global", {}).update(env)
    return merged


class Layout:
    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.volumes: list[str] = []
        self.mounted: dict[str, str] = {}
        self.copied: dict[str, str] = {}

    def file(self, path: Path) -> str:
        key = str(path)
        if key not in self.copied:
            dest = self.staging / "files" / f"{len(self.copied)}-{path.name}"
            dest.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, dest)
            self.copied[key] = f"{MNT}/files/{dest.name}"
        return self.copied[key]

    def folder(self, path: Path) -> str:
        """Bind-mount a folder at /mnt/host/PATH. A PEP 503 index (a folder named `simple`) links
        to its files relatively (../../files/...), so its parent is mounted."""
        top = path.parent if path.name == "simple" else path
        key = str(top)
        if key not in self.mounted:
            (self.staging / "host" / key.lstrip("/")).mkdir(parents=True, exist_ok=True)
            self.mounted[key] = f"{MNT}/host{key}"
            self.volumes.append(f"{key}:{self.mounted[key]}:ro")
        return self.mounted[key] + str(path)[len(key):]

    def rewrite(self, token: str) -> str:
        url = token.startswith("file://")
        raw = token[len("file://"):] if url else token
        if not raw.startswith("/"):
            return token
        path = Path(raw)
        if path.is_file():
            seen = self.file(path)
        elif path.is_dir():
            seen = self.folder(path)
        else:
            return token  # pip ignores a missing location; so does the build
        return f"file://{seen}" if url else seen


def write_pip(layout: Layout) -> None:
    cfg = configparser.RawConfigParser()
    for section, values in pip_settings().items():
        cfg.add_section(section)
        for key, value in values.items():
            cfg.set(section, key, " ".join(layout.rewrite(t) for t in value.split()))
    with open(layout.staging / "pip.conf", "w") as f:
        cfg.write(f)


def write_apt(layout: Layout, ca_bundle: str | None) -> None:
    apt = layout.staging / "apt"
    sources, conf = apt / "sources.list.d", apt / "apt.conf.d"
    sources.mkdir(parents=True)
    conf.mkdir(parents=True)
    etc = Path("/etc/apt")
    if (etc / "sources.list").is_file():
        shutil.copyfile(etc / "sources.list", apt / "sources.list")
    else:
        (apt / "sources.list").write_text("")
    for p in sorted((etc / "sources.list.d").glob("*")):
        if p.is_file() and p.name.endswith(APT_SUFFIXES):
            shutil.copyfile(p, sources / p.name)
    for p in sorted((etc / "apt.conf.d").glob("*")):
        if p.is_file():
            shutil.copyfile(p, conf / p.name)
    if ca_bundle:
        (conf / "99-build-ca").write_text(f'Acquire::https::CAInfo "{ca_bundle}";\n')
    # APT_CONFIG is read first, so the folders it names replace /etc/apt's for this apt run.
    (layout.staging / "apt.conf").write_text(
        f'Dir::Etc::SourceList "{MNT}/apt/sources.list";\n'
        f'Dir::Etc::SourceParts "{MNT}/apt/sources.list.d";\n'
        f'Dir::Etc::Parts "{MNT}/apt/apt.conf.d";\n')


def main() -> None:
    staging = Path(sys.argv[1]).resolve()
    staging.mkdir(parents=True, exist_ok=True)
    layout = Layout(staging)
    write_pip(layout)
    ca = next((Path(p) for p in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt")
               if p and Path(p).is_file()), None)
    write_apt(layout, layout.file(ca) if ca else None)
    # /mnt itself first: buildah mounts parents before what lies below them.
    print(f"{staging}:{MNT}:ro")
    for v in layout.volumes:
        print(v)


if __name__ == "__main__":
    main()
