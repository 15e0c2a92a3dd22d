"""The training corpus scan: which files are used and who they belong to (no torch needed)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from training import data as D


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 90, 60)).save(path)


def test_scan_leaves_out_the_excluded_globs_and_non_media(tmp_path):
    root = tmp_path / "faces-fairface"
    for name in ("1.jpg", "2.png", "ig_0001.jpg", "ig_0002.png", "notes.txt"):
        _img(root / name) if not name.endswith(".txt") else (root / name).write_text("x")
    used = sorted(p.name for _r, p in D.scan([root]))
    assert used == ["1.jpg", "2.png"]  # the default exclusion drops the ig_* screenshots
    everything = sorted(p.name for _r, p in D.scan([root], exclude=()))
    assert everything == ["1.jpg", "2.png", "ig_0001.jpg", "ig_0002.png"]
    # a glob is matched on '<folder name>/<relative path>', so it can name a sub-folder
    _img(root / "bob" / "a.jpg")
    assert "a.jpg" not in {p.name for _r, p in D.scan([root], exclude=("faces-fairface/bob/*",))}


def test_identity_rule_keeps_one_person_per_file_and_groups_numbered_shots(tmp_path):
    fair, london = tmp_path / "faces-fairface", tmp_path / "faces-london"
    ids = {D.identity_of(fair, fair / f"{i}.jpg") for i in range(5)}
    assert len(ids) == 5  # five FairFace files are five people, not one
    assert D.identity_of(london, london / "001_03.jpg") == D.identity_of(london, london / "001_08.jpg")
    assert D.identity_of(london, london / "001_03.jpg") != D.identity_of(london, london / "002_03.jpg")
    assert D.identity_of(tmp_path / "op", tmp_path / "op" / "alice" / "x.mp4") == "op/alice"
