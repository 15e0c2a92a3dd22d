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
    (root / "clip.mpg").write_bytes(b"\x00\x00\x01\xba")  # GRID's talking heads are MPEG-1 .mpg files
    used = sorted(p.name for _r, p in D.scan([root]))
    assert used == ["1.jpg", "2.png", "clip.mpg"]  # the default exclusion drops the ig_* screenshots
    everything = sorted(p.name for _r, p in D.scan([root], exclude=()))
    assert everything == ["1.jpg", "2.png", "clip.mpg", "ig_0001.jpg", "ig_0002.png"]
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


def test_native_view_gives_a_small_face_back_at_its_own_resolution():
    import numpy as np

    img = np.zeros((D.CACHE_SIZE, D.CACHE_SIZE, 3), np.uint8)
    box = np.array([100, 100, 280, 300], np.float32)
    lms = np.array([[150, 160], [230, 160], [190, 200], [160, 250], [220, 250]], np.float32)
    big = D.FaceRecord(img, box, lms, "x/1", "x/1.jpg", -1, 1.0)
    assert big.native_view()[0] is img                      # a cache at full detail is used as is
    small = D.FaceRecord(img, box, lms, "x/2", "x/2.jpg", -1, 0.5)
    out, b, lm = small.native_view()
    assert out.shape == (D.CACHE_SIZE // 2, D.CACHE_SIZE // 2, 3)
    assert np.allclose(b, box / 2) and np.allclose(lm, lms / 2)


def test_cache_crop_records_how_much_detail_the_face_had():
    import numpy as np

    rgb = np.zeros((400, 400, 3), np.uint8)
    lms = np.array([[180, 180], [220, 180], [200, 200], [185, 225], [215, 225]], np.float32)
    _crop, _b, _lm, native = D.cache_crop(rgb, np.array([170, 160, 230, 240], np.float32), lms)
    assert native == np.float32(2.0 * 80 / D.CACHE_SIZE) or abs(native - 2.0 * 80 / D.CACHE_SIZE) < 1e-6
    _crop, _b, _lm, native = D.cache_crop(np.zeros((2000, 2000, 3), np.uint8),
                                         np.array([700, 600, 1300, 1400], np.float32), lms * 5)
    assert native == 1.0                                   # a big face fills the cache: full detail


def test_a_larger_cache_keeps_more_of_a_big_face_and_its_own_key(tmp_path):
    """--cache-size: a classifier trained above 224 px needs cached crops that hold that much of
    the face; a bigger cache maps the box into its own pixels and never shares a file with the
    default cache."""
    import numpy as np

    rgb = np.zeros((2000, 2000, 3), np.uint8)
    box = np.array([700, 600, 1300, 1400], np.float32)
    lms = np.array([[850, 900], [1150, 900], [1000, 1050], [880, 1200], [1120, 1200]], np.float32)
    crop, b, _lm, native = D.cache_crop(rgb, box, lms, 448)
    crop0, b0, _lm0, _n0 = D.cache_crop(rgb, box, lms)
    assert crop.shape == (448, 448, 3) and crop0.shape == (D.CACHE_SIZE, D.CACHE_SIZE, 3)
    assert native == 1.0
    assert np.allclose(b, b0 * 448 / D.CACHE_SIZE, atol=0.5)  # the same face box, more pixels
    # a small face in a big cache is still shrunk back to its own detail, from the cache's side
    rec = D.FaceRecord(np.zeros((448, 448, 3), np.uint8), b, _lm, "x/1", "x/1.jpg", -1, 0.5)
    assert rec.native_view()[0].shape == (224, 224, 3)
    f = tmp_path / "a.jpg"
    _img(f)
    assert D._cache_key(f, 0) != D._cache_key(f, 0, size=448)
