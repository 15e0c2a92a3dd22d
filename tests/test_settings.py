"""Settings are parsed strictly: a malformed value is an error naming the variable."""

from __future__ import annotations

import pytest

from core.settings import SettingsError, load_settings


def test_defaults_put_everything_in_the_data_dir(tmp_path):
    s = load_settings(env={}, data_dir=tmp_path)
    assert s.data_dir == tmp_path.resolve()
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'verity.db'}"
    assert s.storage == "file" and s.blob_dir == tmp_path.resolve() / "blobs"
    assert s.redis_url is None
    assert s.show_score is True and s.route_no_face == "cleared" and s.route_unreadable == "in_review"


def test_data_dir_from_env_and_secret_key_persisted(tmp_path):
    a = load_settings(env={"VERITY_DATA_DIR": str(tmp_path)})
    b = load_settings(env={"VERITY_DATA_DIR": str(tmp_path)})
    assert a.data_dir == tmp_path.resolve()
    assert a.secret_key == b.secret_key and len(a.secret_key) == 64
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("name,value", [
    ("VERITY_SHOW_SCORE", "maybe"),
    ("VERITY_MAX_UPLOAD_BYTES", "10MB"),
    ("VERITY_MAX_UPLOAD_BYTES", "0"),
    ("VERITY_REVIEW_THRESHOLD", "1.5"),
    ("VERITY_DEVICE", "tpu"),
    ("VERITY_ORT_SPIN", "fast"),
    ("VERITY_OPS_TOKEN", "short"),
    ("VERITY_ROUTE_NO_FACE", "authentic"),
    ("VERITY_JOB_RETRY_INTERVALS", "5,x"),
    ("VERITY_STORAGE", "ftp"),
])
def test_bad_values_are_errors_that_name_the_variable(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings(env={name: value}, data_dir=tmp_path)


def test_s3_needs_a_bucket(tmp_path):
    with pytest.raises(SettingsError, match="VERITY_S3_BUCKET"):
        load_settings(env={"VERITY_STORAGE": "s3"}, data_dir=tmp_path)


def test_threshold_order_is_checked(tmp_path):
    with pytest.raises(SettingsError, match="BLOCK"):
        load_settings(env={"VERITY_REVIEW_THRESHOLD": "0.8", "VERITY_BLOCK_THRESHOLD": "0.5"}, data_dir=tmp_path)


def test_values_parse(tmp_path):
    s = load_settings(env={"VERITY_SHOW_SCORE": "off", "VERITY_JOB_RETRY_INTERVALS": "1, 2,3",
                           "REDIS_URL": "redis://h:1/2", "VERITY_ROUTE_NO_FACE": "IN_REVIEW"},
                      data_dir=tmp_path)
    assert s.show_score is False
    assert s.job_retry_intervals == (1, 2, 3)
    assert s.redis_url == "redis://h:1/2"
    assert s.route_no_face == "in_review"
