import pytest

from authsvc.config import ConfigError, load_settings


def test_defaults_are_the_embedded_default(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in ("SSCARD_DATABASE_URL", "SSCARD_REDIS_URL", "SSCARD_KEY_DIR", "SSCARD_KEK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSCARD_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.embedded
    assert settings.database_url == f"sqlite:///{tmp_path / 'sscard.db'}"
    assert settings.redis_url == "memory://"
    assert settings.key_dir == tmp_path / "keys"


def test_postgresql_url_gets_the_shipped_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSCARD_DATABASE_URL", "postgresql://u@db/sscard")
    monkeypatch.setenv("SSCARD_REDIS_URL", "redis://cache:6379/0")
    assert load_settings().database_url == "postgresql+psycopg://u@db/sscard"


def test_postgresql_without_redis_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers sharing a database but not a store would each accept a replayed request once."""
    monkeypatch.setenv("SSCARD_DATABASE_URL", "postgresql://u@db/sscard")
    monkeypatch.delenv("SSCARD_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="SSCARD_REDIS_URL must be a redis:// URL with PostgreSQL"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SSCARD_ISSUER", "ftp://x", "SSCARD_ISSUER: must be an http(s) URL"),
        ("SSCARD_REDIS_URL", "mysql://x", "SSCARD_REDIS_URL: must be memory://"),
        ("SSCARD_DATABASE_URL", "mysql://x", "SSCARD_DATABASE_URL must be sqlite"),
        ("SSCARD_KEK", "not-a-key", "SSCARD_KEK: must be comma-separated Fernet keys"),
        ("SSCARD_ACCESS_TOKEN_TTL", "5", "SSCARD_ACCESS_TOKEN_TTL"),
        ("SSCARD_CHALLENGE_TTL", "soon", "SSCARD_CHALLENGE_TTL"),
    ],
)
def test_each_bad_value_is_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)
    if variable == "SSCARD_KEK":
        assert value not in str(caught.value)  # a secret is never echoed


def test_all_bad_values_are_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSCARD_ISSUER", "nope")
    monkeypatch.setenv("SSCARD_REDIS_URL", "nope://")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "SSCARD_ISSUER" in text and "SSCARD_REDIS_URL" in text
