"""The settings registry: one row per setting, every door checked against the same rule."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sslsms_notify.config import (
    BY_NAME,
    PIPELINE_FIELDS,
    SETTINGS,
    URL_ARGS,
    ConfigError,
    NoConfiguration,
    Settings,
    account_id,
    default_state_path,
    default_state_url,
    legacy_state_path,
    looks_like_number,
    mask_url,
    reference_rows,
    state_files,
)
from sslsms_notify.validation import InvalidValue, Level, Number, StoreURL, mask_credentials

BASE = "sslsms://SID:tok-1234@01711111111"


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch, tmp_path):
    for name in (
        "SSLSMS_URL",
        "SSLSMS_CONFIG",
        "SSLSMS_API_TOKEN",
        "SSLSMS_SID",
        "SSLSMS_BASE_URL",
        "SSLSMS_TO",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_registry_and_fields_agree() -> None:
    assert [f.name for f in dataclasses.fields(Settings)] == [s.name for s in SETTINGS]
    defaults = Settings()
    for setting in SETTINGS:
        assert getattr(defaults, setting.name) == setting.default, setting.name
    assert set(PIPELINE_FIELDS) <= set(BY_NAME)


def test_reference_rows_cover_every_setting() -> None:
    rows = reference_rows()
    assert [r.name for r in rows] == [s.name for s in SETTINGS]
    for row in rows:
        assert row.toml_key and row.default and row.doc, row
        assert "must be" in row.doc  # the rule is part of the reference
    by_name = {r.name: r for r in rows}
    assert by_name["per_recipient_period"].url_arg == "cap_period"
    assert by_name["per_recipient_period"].toml_key == "[pipeline] per_recipient_period"
    assert by_name["api_token"].env == "SSLSMS_API_TOKEN"
    assert by_name["groups"].toml_key == "[groups]" and by_name["routes"].toml_key == "[[routes]]"
    needed = {
        "api_token", "sid", "recipients", "groups", "routes", "base_url", "timeout", "dedup_window",
        "repeat_interval", "group_wait", "tps", "per_recipient_limit", "per_recipient_period",
        "max_segments", "store", "level", "queue_size", "max_windows", "max_pending",
    }  # fmt: skip
    assert needed <= set(by_name)


@pytest.mark.parametrize(
    ("arg", "value", "message"),
    [
        ("timeout", "0", "timeout='0': must be a number of seconds greater than 0 and at most 300"),
        ("timeout", "301", "timeout='301'"),
        ("tps", "nan", "tps='nan': must be a number greater than 0 and at most 10000"),
        ("tps", "inf", "tps='inf'"),
        ("tps", "10001", "tps='10001'"),
        (
            "dedup",
            "-1",
            "dedup='-1': must be a number of seconds from 0 to 2592000 (30 days); 0 turns it off",
        ),
        ("dedup", "nan", "dedup='nan'"),
        ("dedup", "2592001", "dedup='2592001'"),
        ("repeat", "0", "repeat='0': must be a number of seconds greater than 0"),
        ("group_wait", "86401", "group_wait='86401': must be a number of seconds from 0 to 86400 (1 day)"),
        ("cap", "-1", "cap='-1': must be a whole number from 0 to 1000000; 0 means no cap"),
        ("cap", "2.5", "cap='2.5'"),
        ("cap_period", "0", "cap_period='0': must be a number of seconds greater than 0 and at most 2592000"),
        ("segments", "0", "segments='0': must be a whole number from 1 to 15"),
        ("segments", "16", "segments='16'"),
        ("level", "LOUD", "level='LOUD': must be one of debug, info, warning, error, critical"),
        ("level", "51", "level='51'"),
        ("store", "foo://bar", "store='foo://bar': must be memory, sqlite:///PATH"),
        ("store", "sqlite:///", "store='sqlite:///'"),
        ("store", "redis://host/db", "store='redis://host/db'"),
        ("base_url", "ftp://x", "base_url='ftp://x': must be an http:// or https:// URL with a host"),
        ("base_url", "http://", "base_url='http://'"),
        ("queue_size", "0", "queue_size='0': must be a whole number from 1 to 10000000"),
        ("max_windows", "many", "max_windows='many'"),
        ("max_pending", "", "max_pending=''"),
    ],
)
def test_url_arguments_are_checked_where_they_enter(arg: str, value: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Settings.from_url(f"{BASE}?{arg}={value}")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_good_url_round_trips() -> None:
    url = (
        f"{BASE}/01811111111?dedup=60&repeat=600&group_wait=5&tps=2.5&cap=0&cap_period=60"
        "&segments=3&store=redis://:pw@127.0.0.1:6379/1&level=warning&timeout=5&queue_size=10"
        "&max_windows=20&max_pending=30&base_url=http://127.0.0.1:8025&to=01911111111"
    )
    settings = Settings.from_url(url)
    assert settings.per_recipient_limit is None  # cap=0: no cap
    assert settings.level == "WARNING" and settings.max_segments == 3 and settings.queue_size == 10
    assert settings.recipients == ("8801711111111", "8801811111111", "8801911111111")
    assert Settings.from_url(settings.url()) == settings
    private = settings.url(privacy=True)
    assert "tok-1234" not in private and ":pw@" not in private and "pw%40" not in private


def test_url_structure_errors_never_show_the_token() -> None:
    for url, message in [
        ("sslsms://SID@01711111111", "the API token is missing"),
        ("sslsms://:tok-1234@01711111111", "the SID is missing"),
        ("https://SID:tok-1234@01711111111", "must start with sslsms://"),
        ("sslsms://SID:tok-1234@01711111111?dedupe=1", "URL argument 'dedupe' is unknown"),
        ("sslsms://SID:tok-1234@01711111111?tps=1&tps=2", "'tps' is given twice"),
        ("sslsms://SID:tok-1234@[01711111111", "is not a valid URL"),
        ("sslsms://SID:tok#1234@01711111111", "must not contain '#'"),
        ("sslsms://SID:tok-1234@0123", "URL recipient '0123' is not a valid number"),
        ("sslsms://SID:tok-1234@01711111111 x", "must not contain spaces"),
        ("sslsms://SID:" + "t" * 51 + "@01711111111", "api_token: must be a token of 1 to 50 characters"),
        (
            "sslsms://" + "S" * 21 + ":tok-1234@01711111111",
            "sid='SSSSSSSSSSSSSSSSSSSSS': must be a sender id",
        ),
    ]:
        with pytest.raises(ValueError) as caught:
            Settings.from_url(url)
        assert message in str(caught.value), url
        assert "tok-1234" not in str(caught.value) and "t" * 51 not in str(caught.value)


def write(tmp_path, text: str | bytes):
    path = tmp_path / "config.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[pipeline]\ndedup_window = "five"', "pipeline.dedup_window='five': must be a number of seconds"),
        ("[pipeline]\ndedup_window = nan", "pipeline.dedup_window=nan"),
        ("[pipeline]\ntps = true", "pipeline.tps=True: must be a number"),
        (
            "[pipeline]\nper_recipient_period = 0",
            "pipeline.per_recipient_period=0: must be a number of seconds",
        ),
        ('[pipeline]\nstore = "foo://bar"', "pipeline.store='foo://bar'"),
        ("[pipeline]\nstore = 5", "pipeline.store=5"),
        ('[pipeline]\nlevel = "LOUD"', "pipeline.level='LOUD'"),
        ("[pipeline]\nmax_segments = 2.5", "pipeline.max_segments=2.5: must be a whole number"),
        ("[gateway]\ntimeout = 0", "gateway.timeout=0: must be a number of seconds greater than 0"),
        ("[gateway]\nbase_url = 5", "gateway.base_url=5: must be an http:// or https:// URL"),
        (
            "[pipeline]\nbase_url = 'http://x'",
            "[pipeline] has unknown key 'base_url' (it belongs in [gateway])",
        ),
        ("[pipeline]\ncolour = 1", "[pipeline] has unknown key 'colour' (known: "),
        ("dedup_window = 3", "unknown top-level key 'dedup_window' (it belongs in [pipeline])"),
        ("pipeline = 3", "pipeline=3: must be a table ([pipeline])"),
        ("groups = 5", "groups=5: must be a table of group names to lists of numbers"),
        ("[groups]\noncall = 5", "groups.oncall=5: must be a list of phone numbers"),
        ("[groups]\noncall = []", "groups.oncall=[]: must list at least one phone number"),
        ('[groups]\noncall = ["0"]', "groups.oncall[0] '0' is not a valid number"),
        ('[groups]\n"0171" = ["01811111111"]', "a group name must not look like a phone number"),
        ("routes = 5", "routes=5: must be a list of tables"),
        ("routes = [5]", "routes[0]=5: must be a list of tables"),
        ('[[routes]]\ngroups = ["nope"]', "routes[0].groups='nope': no such group (groups: default)"),
        ('[[routes]]\ngroups = ["default"]\nstop = "no"', "routes[0].stop='no': must be true or false"),
        ('[[routes]]\ngroups = ["default"]\nmin_severity = "LOUD"', "routes[0]: severity 'LOUD'"),
        ("[[routes]]\ngroups = [5]", "routes[0].groups=[5]: must be a list of names"),
        ("url = 5", "url=5: must be an sslsms:// URL string"),
        ('url = "sslsms://S@0171"', "url: URL must start with sslsms://SID:API_TOKEN@"),
        ("[gateway\n", "not valid TOML"),
    ],
)
def test_toml_values_of_the_wrong_type_or_range(tmp_path, toml: str, message: str) -> None:
    head = "" if toml.startswith(("url", "[gateway\n")) else f'url = "{BASE}"\n'
    path = write(tmp_path, head + toml)
    with pytest.raises(ConfigError) as caught:
        Settings.from_toml(path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(path))
    assert "tok-1234" not in str(caught.value)


def test_toml_file_problems(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not valid UTF-8 \\(byte 0xff at offset 7\\)"):
        Settings.from_toml(write(tmp_path, b'url = "\xff"\n'))
    with pytest.raises(ConfigError, match="is a directory"):
        Settings.from_toml(tmp_path)
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        Settings.from_toml(tmp_path / "nope.toml")


def test_toml_full_example(tmp_path) -> None:
    path = write(
        tmp_path,
        f"""
url = "{BASE}"
[gateway]
timeout = 5
[pipeline]
dedup_window = 60
per_recipient_limit = 0
store = "sqlite:///{tmp_path}/x.db"
level = "warning"
[groups]
oncall = ["01812345678", "01812345678", "01912345678"]
dbas = "01512345678, 01612345678"
[[routes]]
groups = ["oncall"]
min_severity = "error"
""",
    )
    settings = Settings.from_toml(path)
    assert settings.groups == {
        "oncall": ("8801812345678", "8801912345678"),
        "dbas": ("8801512345678", "8801612345678"),
    }
    assert settings.per_recipient_limit is None and settings.timeout == 5.0 and settings.level == "WARNING"
    notifier = settings.notifier(start=False, close_at_exit=None)
    notifier.close(0)


def test_load_precedence_and_sources(tmp_path, monkeypatch) -> None:
    with pytest.raises(NoConfiguration):
        Settings.load()
    monkeypatch.setenv("SSLSMS_API_TOKEN", "tok-env")
    monkeypatch.setenv("SSLSMS_SID", "ENV")
    monkeypatch.setenv("SSLSMS_TO", "01711111111,01811111111")
    settings, source = Settings.load_with_source()
    assert source == "environment" and settings.recipients == ("8801711111111", "8801811111111")
    monkeypatch.setenv("SSLSMS_BASE_URL", "gopher://x")
    with pytest.raises(ConfigError, match="SSLSMS_BASE_URL='gopher://x': must be an http"):
        Settings.load()
    monkeypatch.setenv("SSLSMS_URL", f"{BASE}?dedup=7")
    assert Settings.load_with_source()[1] == "SSLSMS_URL" and Settings.load().dedup_window == 7
    monkeypatch.setenv("SSLSMS_URL", f"{BASE}?dedup=soon")
    with pytest.raises(ConfigError, match="SSLSMS_URL: dedup='soon'"):
        Settings.load()
    # a file without credentials takes them from SSLSMS_URL; the file wins otherwise
    monkeypatch.setenv("SSLSMS_URL", f"{BASE}?dedup=7")
    path = write(tmp_path, "[pipeline]\ndedup_window = 9\n[groups]\noncall = ['01911111111']\n")
    settings, source = Settings.load_with_source(config=path)
    assert source == str(path) and settings.api_token == "tok-1234" and settings.dedup_window == 9
    assert Settings.load(f"{BASE}?dedup=3").dedup_window == 3  # --url first


def test_keywords_are_checked_too() -> None:
    with pytest.raises(ValueError, match="per_recipient_period=0: must be a number of seconds"):
        Settings(api_token="tok-1234", sid="S", per_recipient_period=0).validated()
    with pytest.raises(ValueError, match="tps=nan"):
        Settings(api_token="tok-1234", sid="S", tps=math.nan).validated()
    with pytest.raises(ValueError, match="api_token is missing"):
        Settings(sid="S").validated()
    assert (
        Settings(api_token="tok-1234", sid="S", per_recipient_limit=0).validated().per_recipient_limit is None
    )


def test_describe_and_repr_mask_every_credential() -> None:
    settings = Settings.from_url(
        f"{BASE}?store=redis://user:RedisPw9@127.0.0.1:6379/0&base_url=http://admin:HttpPw9@127.0.0.1:1"
    )
    for text in (repr(settings), settings.masked_url(), str(settings.describe())):
        for secret in ("tok-1234", "RedisPw9", "HttpPw9"):
            assert secret not in text, text
    described = settings.describe()
    assert described["api_token"] == "****"
    assert described["store"] == "redis://user:****@127.0.0.1:6379/0"
    assert described["base_url"] == "http://admin:****@127.0.0.1:1"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("sslsms://SID:tok-1234@0171", "sslsms://SID:****@0171"),
        ("redis://:PASSWORD@host/0", "redis://:****@host/0"),
        ("rediss://user:pw@host:6380/0", "rediss://user:****@host:6380/0"),
        ("redis://bare-token@host", "redis://****@host"),
        ("https://user:pass@example.com/x", "https://user:****@example.com/x"),
        ("error: store 'redis://:pw@h' down", "error: store 'redis://:****@h' down"),
        (
            "sslsms://S:****@1?store=redis%3A%2F%2F%3Apw%40h%2F0",
            "sslsms://S:****@1?store=redis%3A%2F%2F%3A****%40h%2F0",
        ),
        ("http://h/x?api_token=abc&b=1", "http://h/x?api_token=****&b=1"),
        ("redis://h/0?password=abc", "redis://h/0?password=****"),
        ("no url here", "no url here"),
        ("sslsms://SID:API_TOKEN@NUMBER", "sslsms://SID:API_TOKEN@NUMBER"),  # our own placeholder
    ],
)
def test_mask_url(text: str, masked: str) -> None:
    assert mask_url(text) == masked == mask_credentials(text)


def test_numbers_and_group_names_by_shape() -> None:
    for number in ("01711111111", "+880 1711-111111", "(017) 1111.1111", "0171234", "০১৭১১১১১১১১"):
        assert looks_like_number(number), number
    for name in ("oncall", "dbas-2", "team 7", "", "  ", "+", "O1711111111"):
        assert not looks_like_number(name), name


GATEWAY = "https://smsplus.sslwireless.com"


def test_default_state_is_per_account_and_follows_xdg(tmp_path, monkeypatch) -> None:
    import hashlib

    digest = hashlib.sha256(f"MYBRAND\0{GATEWAY}".encode()).hexdigest()[:12]
    assert account_id("MYBRAND", GATEWAY) == digest
    path = tmp_path / "state" / "sslsms-notify" / f"state-{digest}.db"
    assert default_state_path("MYBRAND", GATEWAY) == path
    assert default_state_url("MYBRAND", GATEWAY) == f"sqlite:///{path}"
    monkeypatch.setenv("XDG_STATE_HOME", "")
    assert default_state_path("MYBRAND", GATEWAY) == (
        tmp_path / ".local" / "state" / "sslsms-notify" / f"state-{digest}.db"
    )


def test_two_accounts_never_share_a_default_state_file() -> None:
    staging = default_state_path("STAGING", "http://127.0.0.1:8025")
    assert staging != default_state_path("EMULATOR", "http://127.0.0.1:8025")  # another SID
    assert staging != default_state_path("STAGING", "http://127.0.0.1:8026")  # another gateway
    # the separator keeps ("AB", "C...") and ("A", "BC...") apart
    assert account_id("AB", "http://x") != account_id("A", "Bhttp://x")
    # the same account however its base URL is written; the token is not part of it
    assert staging == default_state_path("STAGING", "http://127.0.0.1:8025/")
    token_a = Settings.from_url("sslsms://STAGING:tok-aaaa@01711111111?base_url=http://127.0.0.1:8025/")
    token_b = Settings.from_url("sslsms://STAGING:tok-bbbb@01711111111?base_url=http://127.0.0.1:8025")
    assert default_state_path(token_a.sid, token_a.base_url) == staging
    assert default_state_path(token_b.sid, token_b.base_url) == staging
    assert "tok-" not in str(staging)


def test_state_files_lists_accounts_and_the_old_shared_file(tmp_path) -> None:
    assert state_files() == []
    directory = tmp_path / "state" / "sslsms-notify"
    directory.mkdir(parents=True)
    one = default_state_path("A", GATEWAY)
    one.write_bytes(b"")
    (directory / f"{one.name}-wal").write_bytes(b"")  # SQLite's side files are not state files
    assert state_files() == [one]
    legacy_state_path().write_bytes(b"")
    assert legacy_state_path() == directory / "state.db"
    assert state_files() == [one, directory / "state.db"]


def test_no_home_for_the_default_state_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "")
    monkeypatch.delenv("HOME")

    def no_home(self):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr("pathlib.Path.expanduser", no_home)
    with pytest.raises(ConfigError, match="set XDG_STATE_HOME or pass a store"):
        default_state_path("A", GATEWAY)
    assert state_files() == []


def test_rules_directly() -> None:
    assert Number(0, 10).check("x", "5", text=True) == 5.0
    assert Number(0, 10, whole=True).check("x", 5.0) == 5
    with pytest.raises(InvalidValue, match="x='5': must be a number"):
        Number(0, 10).check("x", "5")  # a string from TOML is not a number
    assert Level().check("level", "warning") == "WARNING" and Level().check("level", "30", text=True) == 30
    assert StoreURL().check("store", " memory ") == "memory"
    assert StoreURL().check("store", "unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_url_args_are_the_registry() -> None:
    assert set(URL_ARGS) == {s.url_arg for s in SETTINGS if s.url_arg}
    assert {"dedup", "repeat", "cap", "cap_period", "segments", "to"} <= set(URL_ARGS)


def test_the_relay_section_is_declared_like_every_other() -> None:
    from sslsms_notify.config import RELAY_SETTINGS
    from sslsms_notify.relay.settings import RelaySettings

    assert [f.name for f in dataclasses.fields(RelaySettings)] == [s.name for s in RELAY_SETTINGS]
    defaults = RelaySettings()
    for setting in RELAY_SETTINGS:
        assert getattr(defaults, setting.name) == setting.default, setting.name
        assert setting.toml == f"relay.{setting.name}" and setting.doc and "must be" in setting.rule.rule
    # every declared variable sets its field, and nothing else does
    samples = {"SSLSMS_RELAY_LISTEN": "127.0.0.1:9", "SSLSMS_RELAY_TOKENS": "a-relay-token-of-24-chars"}
    assert {s.env for s in RELAY_SETTINGS if s.env} == set(samples)
    for setting in RELAY_SETTINGS:
        if setting.env:
            loaded = RelaySettings.load({}, environ={setting.env: samples[setting.env]})
            changed = [s.name for s in RELAY_SETTINGS if getattr(loaded, s.name) != s.default]
            assert changed == [setting.name]
    with pytest.raises(ValueError, match=r"^SSLSMS_RELAY_LISTEN='nowhere': must be HOST:PORT"):
        RelaySettings.load({}, environ={"SSLSMS_RELAY_LISTEN": "nowhere"})


def test_a_key_of_another_section_says_where_it_belongs(tmp_path) -> None:
    path = write(tmp_path, f'url = "{BASE}"\n[pipeline]\nlisten = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'listen' \(it belongs in \[relay\]\)"):
        Settings.from_toml(path)
    path = write(tmp_path, f'url = "{BASE}"\n[relay]\nlisten = "127.0.0.1:1"\n')
    assert Settings.from_toml(path).sid == "SID"  # the relay reads its own section


def test_the_notifier_s_options_are_checked_by_the_registry() -> None:
    from sslsms_notify.config import checked_options

    assert checked_options({"dedup_window": 60, "per_recipient_limit": 0, "store": "memory://"}) == {
        "dedup_window": 60.0,
        "per_recipient_limit": None,
        "store": "memory",
    }
    with pytest.raises(InvalidValue, match=r"^dedup_window=-1: must be a number of seconds from 0"):
        checked_options({"dedup_window": -1})
    with pytest.raises(TypeError, match="'sid' is not a pipeline setting"):
        checked_options({"sid": "S"})
    assert set(PIPELINE_FIELDS) == {s.name for s in SETTINGS if s.notifier_option}


@pytest.mark.parametrize(
    "spec",
    [
        {"groups": ["oncall"]},
        {"groups": "oncall, dba", "min_severity": "WARN"},
        {"groups": ["oncall"], "min_severity": 45},
        {"groups": []},
        {"groups": " , "},
        {"groups": ["oncall"], "min_severity": "loud"},
        {"groups": ["oncall"], "min_severity": True},
        {"min_severity": "error"},
    ],
)
def test_the_routes_rule_accepts_what_route_parse_builds(spec) -> None:
    from sslsms_notify.alerting.routing import Route
    from sslsms_notify.config import Routes

    try:
        Route.parse(spec)
    except ValueError as exc:
        with pytest.raises(InvalidValue) as refused:
            Routes().check("routes", [spec])
        assert str(refused.value) == f"routes[0]: {exc}"
    else:
        assert Routes().check("routes", [spec]) == (spec,)
