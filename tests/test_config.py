"""Settings: precedence, strictness, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from refluent.config import Settings, load_settings, masked
from refluent.errors import ConfigError

pytestmark = pytest.mark.unit


def _toml(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "refluent.toml"
    path.write_text(text)
    monkeypatch.setenv("REFLUENT_CONFIG", str(path))


def test_precedence__argument_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _toml(tmp_path, '[kafka]\nclient_id = "from-file"\nlinger_ms = 7\n'
                    '[topics]\ndefault_partitions = 6\n', monkeypatch)
    assert load_settings().kafka.client_id == "from-file"
    monkeypatch.setenv("REFLUENT_KAFKA__CLIENT_ID", "from-env")
    s = load_settings()
    assert s.kafka.client_id == "from-env"
    assert s.kafka.linger_ms == 7, "file values the environment does not set survive"
    assert s.topics.default_partitions == 6
    assert s.redis.key_prefix == "rf", "defaults fill the rest"
    s = load_settings(kafka={"client_id": "from-arg"})
    assert s.kafka.client_id == "from-arg"
    assert s.kafka.linger_ms == 7, "an argument for one field keeps the others"


def test_unknown_setting__is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _toml(tmp_path, "[kafka]\nbootstrap = 'x'\n", monkeypatch)
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap"):
        load_settings()


def test_bad_value__names_setting_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLUENT_KAFKA__LINGER_MS", "-3")
    with pytest.raises(ConfigError, match=r"kafka\.linger_ms.*REFLUENT_"):
        load_settings()


def test_table_store__only_memory_which_a_crash_cannot_leave_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFLUENT_PROCESSING__TABLE_STORE", "rocksdb://")
    with pytest.raises(ConfigError, match=r"processing\.table_store.*'rocksdb://' is not "
                                          r"supported.*rebuilt from the changelog"):
        load_settings()
    monkeypatch.setenv("REFLUENT_PROCESSING__TABLE_STORE", "memory://")
    assert load_settings().processing.table_store == "memory://"


def test_missing_config_file_named_in_env__is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFLUENT_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="nope.toml does not exist"):
        load_settings()


def test_secrets__are_masked_and_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLUENT_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("REFLUENT_REDIS__URL", "redis://app:redispw@db:6379/0")
    monkeypatch.setenv("REFLUENT_LAKE__CATALOG_URI", "postgresql+psycopg://lake:lakepw@pg/lake")
    monkeypatch.setenv("REFLUENT_LAKE__PROPERTIES",
                       '{"s3.secret-access-key": "s3pw", "s3.session-token": "t0k3n", '
                       '"s3.access-key-id": "AKIA", "s3.endpoint": "http://u:minio@s3:9000"}')
    s = load_settings()
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"
    shown = masked(s)
    assert "hunter2" not in repr(s)
    for secret in ("hunter2", "redispw", "lakepw", "s3pw", "t0k3n", "minio"):
        assert secret not in str(shown)
    assert shown["kafka"]["sasl_password"] == "**********"
    assert shown["redis"]["url"] == "redis://app:***@db:6379/0"
    assert shown["lake"]["catalog_uri"] == "postgresql+psycopg://lake:***@pg/lake"
    assert shown["lake"]["properties"] == {
        "s3.secret-access-key": "**********", "s3.session-token": "**********",
        "s3.access-key-id": "AKIA", "s3.endpoint": "http://u:***@s3:9000"}
    assert s.kafka.client_config("b:9092")["sasl.password"] == "hunter2"


def test_settings__are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.kafka.client_id = "x"  # type: ignore[misc]


def test_nested_env_lists__parse_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLUENT_TOPICS__CDC_TABLES", '["users", "payments"]')
    assert load_settings().topics.cdc_tables == ["users", "payments"]
