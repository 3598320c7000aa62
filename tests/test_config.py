import os
import stat

import pytest

from server import config


def test_secret_key_is_generated_once_with_private_permissions(tmp_path):
    env = {"NABLA_INSTANCE_PATH": str(tmp_path / "inst")}
    first = config.load_settings(env)
    second = config.load_settings(env)
    assert first["SECRET_KEY"] == second["SECRET_KEY"] and len(first["SECRET_KEY"]) == 64
    key_file = tmp_path / "inst" / config.SECRET_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert list((tmp_path / "inst").iterdir()) == [key_file]  # no temporary files left


def test_environment_secret_key_wins_and_no_file_is_written(tmp_path):
    env = {"NABLA_INSTANCE_PATH": str(tmp_path), "NABLA_SECRET_KEY": "s" * 40}
    assert config.load_settings(env)["SECRET_KEY"] == "s" * 40
    assert not (tmp_path / config.SECRET_KEY_FILE).exists()


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path):
    settings = config.load_settings({"NABLA_INSTANCE_PATH": str(tmp_path)})
    assert settings["DATABASE_URL"] == f"sqlite:///{tmp_path}/nabla.sqlite3"
    env = {"NABLA_INSTANCE_PATH": str(tmp_path), "NABLA_DATABASE_URL": "postgresql://x/y"}
    assert config.load_settings(env)["DATABASE_URL"] == "postgresql://x/y"


def test_cookie_settings_are_safe(tmp_path):
    settings = config.load_settings({"NABLA_INSTANCE_PATH": str(tmp_path)})
    assert settings["SESSION_COOKIE_HTTPONLY"] is True
    assert settings["SESSION_COOKIE_SAMESITE"] == "Lax"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NABLA_SECRET_KEY": "short"}, "NABLA_SECRET_KEY must be at least 32"),
        ({"NABLA_TIMEZONE": "Mars/Olympus"}, "NABLA_TIMEZONE: unknown time zone"),
        ({"NABLA_MAX_CONTENT_LENGTH": "lots"}, "NABLA_MAX_CONTENT_LENGTH must be an integer"),
        ({"NABLA_SECURE_COOKIES": "maybe"}, "NABLA_SECURE_COOKIES must be true or false"),
        ({"NABLA_SUBMIT_RATE": "fast"}, "NABLA_SUBMIT_RATE must look like '20/minute'"),
        ({"NABLA_SUBMIT_RATE": "0/minute"}, "NABLA_SUBMIT_RATE: the limit and the period"),
        ({"NABLA_LOGIN_RATE": "off"}, "NABLA_LOGIN_RATE cannot be off"),
        ({"NABLA_PROXIES": "two"}, "NABLA_PROXIES must be an integer"),
        ({"NABLA_BASE_URL": "nabla.example.edu"}, "NABLA_BASE_URL must start with https://"),
        ({"NABLA_BASE_URL": "ftp://nabla.example.edu"}, "NABLA_BASE_URL must start with"),
        ({"NABLA_BASE_URL": "https://"}, "NABLA_BASE_URL has no host name"),
        ({"NABLA_BASE_URL": "https://nabla.example.edu/?next=x"}, "must not have a query"),
        ({"NABLA_BASE_URL": "https://nabla.example.edu/#top"}, "or a fragment"),
        ({"NABLA_BASE_URL": "https://me:pw@nabla.example.edu"}, "must not carry a user name"),
        ({"NABLA_BASE_URL": "https://nabla.example.edu:https"}, "port that is not a number"),
        ({"NABLA_LOOPBACK_BIND": "0.0.0.0:5000"}, "NABLA_LOOPBACK_BIND must be a loopback"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path, env, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load_settings({"NABLA_INSTANCE_PATH": str(tmp_path), **env})


def test_secret_key_is_never_logged(tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    settings = config.load_settings({"NABLA_INSTANCE_PATH": str(tmp_path)})
    assert settings["SECRET_KEY"] not in caplog.text


@pytest.mark.parametrize(("raw", "rate"), [
    ("20/minute", (20, 60)), ("20 per minute", (20, 60)), ("5/15minutes", (5, 900)),
    ("5 / 15 minutes", (5, 900)), ("100/hour", (100, 3600)), ("3/second", (3, 1)),
    ("1000/day", (1000, 86400)), ("30", (30, 60)), ("off", None), ("OFF", None)])
def test_rates_are_read_in_several_spellings(raw, rate):
    assert config.parse_rate("NABLA_SUBMIT_RATE", raw) == rate


def test_rate_defaults(tmp_path):
    settings = config.load_settings({"NABLA_INSTANCE_PATH": str(tmp_path)})
    assert settings["NABLA_SUBMIT_RATE"] == (20, 60)
    assert settings["NABLA_CHECK_RATE"] == (60, 60)  # generous: a budget of its own
    assert config.load_settings({"NABLA_INSTANCE_PATH": str(tmp_path),
                                 "NABLA_CHECK_RATE": "off"})["NABLA_CHECK_RATE"] is None
    assert settings["NABLA_LOGIN_RATE"] == (5, 900)
    assert settings["NABLA_LOGIN_ADDRESS_RATE"] == (50, 900)
    assert settings["NABLA_REDIS_URL"] is None and settings["NABLA_PROXIES"] == 0


def test_the_old_proxies_name_is_still_read_with_a_warning(tmp_path, caplog):
    env = {"NABLA_INSTANCE_PATH": str(tmp_path), "NABLA_TRUSTED_PROXIES": "2"}
    assert config.load_settings(env)["NABLA_PROXIES"] == 2
    assert "NABLA_TRUSTED_PROXIES is deprecated: rename it to NABLA_PROXIES" in caplog.text
    env["NABLA_PROXIES"] = "1"  # the new name wins
    assert config.load_settings(env)["NABLA_PROXIES"] == 1


def test_base_url_is_read_without_its_trailing_slash_and_has_no_default(tmp_path):
    def settings(**env):
        return config.load_settings({"NABLA_INSTANCE_PATH": str(tmp_path), **env})

    assert settings()["NABLA_BASE_URL"] is None  # no http://127.0.0.1:5000 fallback
    assert settings(NABLA_BASE_URL=" https://example.edu/nabla/ ")["NABLA_BASE_URL"] == \
        "https://example.edu/nabla"
    assert settings(NABLA_LOOPBACK_BIND="[::1]:5000")["NABLA_LOOPBACK_BIND"] == "[::1]:5000"
    assert settings()["NABLA_LOOPBACK_BIND"] is None


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1:5000", True), ("127.8.9.1", True), ("[::1]:5000", True), ("LocalHost", True),
    ("0.0.0.0:5000", False), ("evil.example", False), ("127.0.0.1.evil.example", False),
    ("localhost.evil.example", False), ("[::1", False), ("", False), (None, False),
    ("unix:/run/nabla.sock", False)])
def test_loopback_hosts(host, loopback):
    assert config.is_loopback_host(host) is loopback


def test_the_judge_limits_default_and_say_which_setting_is_wrong():
    from server.config import draw_settings, judge_settings, spec_judge_settings

    assert judge_settings({}) == {"size": 2, "timeout_s": 5.0, "memory_mb": 512}
    assert spec_judge_settings({}) == {"size": 1, "timeout_s": 10.0, "memory_mb": 512,
                                       "nice": 10, "wait_s": 0.25}
    assert draw_settings({"NABLA_DRAW_TIMEOUT_S": "3"}) == {
        "timeout_s": 3.0, "memory_mb": 256, "draw_limit_s": 1.5}
    for name, raw, words in (("NABLA_SPEC_TIMEOUT_S", "soon", "must be a number"),
                             ("NABLA_DRAW_TIMEOUT_S", "0", "must be between 0.1 and 600"),
                             ("NABLA_SPEC_MEMORY_MB", "10", "must be at least 64")):
        with pytest.raises(config.ConfigError, match=f"{name} {words}"):
            config.load_settings({name: raw, "NABLA_SECRET_KEY": "k" * 40,
                                  "NABLA_BASE_URL": "http://127.0.0.1:5000"})
