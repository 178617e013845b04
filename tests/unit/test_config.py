from pathlib import Path

import pytest
from pydantic import ValidationError

from voltcloud.config import Settings


def test_environment_overrides_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "voltcloud.toml"
    config.write_text('listen = "0.0.0.0:6000"\ngrace_period_s = 3.5\ntracing_exporter = "console"\n')
    monkeypatch.setenv("VOLTCLOUD_CONFIG_FILE", str(config))
    monkeypatch.setenv("VOLTCLOUD_GRACE_PERIOD_S", "1.5")
    settings = Settings()
    assert settings.listen == "0.0.0.0:6000"
    assert settings.grace_period_s == 1.5
    assert settings.tracing_exporter == "console"


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'voltcloud.db'}"


@pytest.mark.parametrize("listen", ["localhost", ":50051", "host:port"])
def test_listen_needs_host_and_port(listen: str) -> None:
    with pytest.raises(ValidationError, match="HOST:PORT"):
        Settings(listen=listen)


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        Settings(colour="blue")  # type: ignore[call-arg]
