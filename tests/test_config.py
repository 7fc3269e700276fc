"""Configuration: precedence, unknown keys, field-naming errors, secrets kept out of messages."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from veolia2mqtt.config import Settings, load_settings
from veolia2mqtt.errors import ConfigError
from veolia2mqtt.mqtt.topics import Metric
from veolia2mqtt.veolia.portals import COGNITO_URL, PORTALS

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "config.example.yaml"

EMAIL = "jean.dupont@example.fr"
PASSWORD = "hunter2-Pa55!"
REFRESH_TOKEN = "eyJjdHkiOiJKV1QiLCJlbmMiOiJBMjU2R0NNIn0.refresh-secret"
MQTT_PASSWORD = "broker-Pa55?"
CREDENTIALS = f"veolia:\n  email: {EMAIL}\n  password: '{PASSWORD}'\n"
LINE = re.compile(r"^[\w.\-\[\]/]+: \S.*$")


@pytest.fixture(autouse=True)
def _no_config_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs where no ./config.yaml exists unless it writes one."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **kwargs: Any) -> Settings:
    return load_settings(write(tmp_path, text), **kwargs)


def problems(tmp_path: Path, text: str, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kwargs)
    err = info.value
    assert str(err) == "\n".join(err.problems)
    # Raised "from None": a readable line, never a chained pydantic traceback.
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__
    return err.problems


def secret_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


# --- precedence: env > *_FILE > YAML > defaults --------------------------------------------


def test_yaml_beats_default(tmp_path: Path) -> None:
    assert load(tmp_path, "", require_credentials=False).mqtt.port == 1883
    assert load(tmp_path, "mqtt: {port: 1884}", require_credentials=False).mqtt.port == 1884


def test_env_beats_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__HOST", "from-env")
    settings = load(tmp_path, "mqtt: {host: from-yaml}", require_credentials=False)
    assert settings.mqtt.host == "from-env"


def test_env_beats_default_without_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_SYNC__TIMEZONE", "Europe/Brussels")
    monkeypatch.setenv("VEOLIA2MQTT_STATE_DIR", "/data/state")
    settings = load_settings(require_credentials=False)
    assert settings.sync.timezone == "Europe/Brussels"
    assert settings.state_dir == Path("/data/state")


def test_file_secret_beats_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secret_file(tmp_path, "veolia_password", "from-file\n")
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__PASSWORD_FILE", str(secret))
    settings = load(tmp_path, CREDENTIALS)
    assert settings.veolia.password is not None
    # The trailing newline that editors and `echo` add is not part of the secret.
    assert settings.veolia.password.get_secret_value() == "from-file"
    assert settings.veolia.email == EMAIL


def test_env_beats_file_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secret_file(tmp_path, "veolia_password", "from-file")
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__PASSWORD_FILE", str(secret))
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__PASSWORD", "from-env")
    settings = load(tmp_path, CREDENTIALS)
    assert settings.veolia.password is not None
    assert settings.veolia.password.get_secret_value() == "from-env"


def test_nested_env_deep_merges_with_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__HOST", "broker.lan")
    settings = load(
        tmp_path,
        "mqtt:\n  host: localhost\n  port: 8883\n  tls: {enabled: true}\n",
        require_credentials=False,
    )
    assert settings.mqtt.host == "broker.lan"
    assert settings.mqtt.port == 8883
    assert settings.mqtt.tls.enabled is True


def test_nested_file_secret_deep_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = secret_file(tmp_path, "mqtt_password", MQTT_PASSWORD)
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__PASSWORD_FILE", str(secret))
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__PORT", "1885")
    settings = load(
        tmp_path, "mqtt: {host: broker.lan, port: 1884, username: bob}", require_credentials=False
    )
    assert settings.mqtt.host == "broker.lan"
    assert settings.mqtt.username == "bob"
    assert settings.mqtt.port == 1885
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == MQTT_PASSWORD


def test_env_names_are_case_insensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("veolia2mqtt_mqtt__host", "lower.lan")
    assert load(tmp_path, "", require_credentials=False).mqtt.host == "lower.lan"


# --- which file ----------------------------------------------------------------------------


def test_config_variable_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "mqtt: {host: chosen-by-env}", name="elsewhere.yaml")
    monkeypatch.setenv("VEOLIA2MQTT_CONFIG", str(path))
    # Not taken for a setting called "config" (extra="forbid" would reject it).
    settings = load_settings(require_credentials=False)
    assert settings.mqtt.host == "chosen-by-env"


def test_explicit_path_beats_config_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_CONFIG", str(write(tmp_path, "mqtt: {host: env}", "a.yaml")))
    explicit = write(tmp_path, "mqtt: {host: explicit}", "b.yaml")
    assert load_settings(explicit, require_credentials=False).mqtt.host == "explicit"


def test_default_file_in_working_directory_is_read(tmp_path: Path) -> None:
    Path("config.yaml").write_text("mqtt: {host: from-cwd}", encoding="utf-8")
    assert load_settings(require_credentials=False).mqtt.host == "from-cwd"


def test_missing_default_file_means_defaults(tmp_path: Path) -> None:
    settings = load_settings(require_credentials=False)
    assert settings.mqtt.host == "localhost"
    assert settings.state_dir == Path("state")


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing, require_credentials=False)
    assert (
        str(info.value)
        == f"{missing}: cannot read the configuration file: No such file or directory"
    )


def test_missing_file_named_by_config_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the configuration file"):
        load_settings(require_credentials=False)


def test_directory_as_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the configuration file: Is a directory"):
        load_settings(tmp_path, require_credentials=False)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "# nothing yet\n", require_credentials=False).mqtt.port == 1883


# --- YAML problems -------------------------------------------------------------------------


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt:\n  host: localhost\n\tport: 1883\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert text.startswith(f"{path}: invalid YAML at line 3, column 1: ")
    assert "\n" not in text


def test_unclosed_flow_mapping_is_located(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "mqtt: {host: a\nsync: {}\n")
    assert re.search(r"invalid YAML at line \d+, column \d+: ", line)


@pytest.mark.parametrize("text", ["- mqtt\n- sync\n", "just a sentence\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    [line] = problems(tmp_path, text)
    assert line.endswith("the top level must be a mapping of sections (veolia, mqtt, ...)")


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, "mqtt: localhost", require_credentials=False) == [
        "mqtt: Input should be a valid dictionary or instance of MqttSettings"
    ]


# --- unknown keys at every depth -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqt: {host: a}", "mqt: unknown key"),
        ("mqtt: {prot: 1}", "mqtt.prot: unknown key"),
        ("mqtt: {tls: {enable: true}}", "mqtt.tls.enable: unknown key"),
        ("veolia: {mail: a}", "veolia.mail: unknown key"),
        ("sync: {hour: '06:00'}", "sync.hour: unknown key"),
        ("jeedom: {link: x}", "jeedom.link: unknown key"),
        ("log: {lvl: DEBUG}", "log.lvl: unknown key"),
        ("meters: {X1: {nme: a}}", "meters.X1.nme: unknown key"),
        (
            "meters: {X1: {commands: {index: {nam: a}}}}",
            "meters.X1.commands.index.nam: unknown key",
        ),
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text, require_credentials=False) == [expected]


def test_unknown_metric_in_commands_is_named(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "meters: {X1: {commands: {bogus: {}}}}", require_credentials=False)
    assert line.startswith("meters.X1.commands.bogus: ")
    assert "'daily_consumption'" in line
    assert "[key]" not in line


def test_unknown_nested_env_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__PROT", "1")
    assert problems(tmp_path, "", require_credentials=False) == ["mqtt.prot: unknown key"]


def test_unknown_top_level_env_key_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_MQT__HOST", "typo.lan")
    assert problems(tmp_path, "", require_credentials=False) == [
        "mqt: unknown key (from VEOLIA2MQTT_MQT__HOST)"
    ]


def test_unknown_file_secret_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__PASWORD_FILE", str(secret_file(tmp_path, "s", "x")))
    assert problems(tmp_path, "", require_credentials=False) == ["veolia.pasword: unknown key"]


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        "mqtt: {port: 0, prot: 1}\nsync: {time: '7h'}\nmeters: {X1: {category: garage}}\n",
        require_credentials=False,
    )
    assert len(lines) == 4
    assert all(LINE.match(line) for line in lines), lines
    assert {line.split(":")[0] for line in lines} == {
        "mqtt.port",
        "mqtt.prot",
        "sync.time",
        "meters.X1.category",
    }


# --- field constraints ---------------------------------------------------------------------


def test_port_message_names_the_field(tmp_path: Path) -> None:
    assert problems(tmp_path, "mqtt: {port: 65536}", require_credentials=False) == [
        "mqtt.port: Input should be less than 65536"
    ]
    assert problems(tmp_path, "mqtt: {port: 0}", require_credentials=False) == [
        "mqtt.port: Input should be greater than or equal to 1"
    ]


def test_env_value_is_validated_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__PORT", "abc")
    [line] = problems(tmp_path, "", require_credentials=False)
    assert line.startswith("mqtt.port: Input should be a valid integer")


def test_section_given_as_bad_json_env_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA", '{"password": "' + PASSWORD + '"')
    lines = problems(tmp_path, "", require_credentials=False)
    assert lines == ["veolia: the VEOLIA2MQTT_VEOLIA variable is not valid JSON"]


@pytest.mark.parametrize("value", ["00:00", "06:30", "23:59"])
def test_sync_time_accepts_hh_mm(tmp_path: Path, value: str) -> None:
    settings = load(tmp_path, f"sync: {{time: '{value}'}}", require_credentials=False)
    assert settings.sync.time == value


@pytest.mark.parametrize("value", ["24:00", "6:30", "06:60", "noon", "06:30:00", ""])
def test_sync_time_rejects_other_text(tmp_path: Path, value: str) -> None:
    [line] = problems(tmp_path, f"sync: {{time: '{value}'}}", require_credentials=False)
    assert line.startswith("sync.time: String should match pattern")


def test_sync_time_defaults_to_none(tmp_path: Path) -> None:
    assert load(tmp_path, "sync: {time: null}", require_credentials=False).sync.time is None


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "Europe/"])
def test_bad_timezone_is_named(tmp_path: Path, zone: str) -> None:
    [line] = problems(tmp_path, f"sync: {{timezone: '{zone}'}}", require_credentials=False)
    assert line.startswith("sync.timezone: unknown time zone")


def test_timezone_is_usable(tmp_path: Path) -> None:
    settings = load(tmp_path, "sync: {timezone: America/Cayenne}", require_credentials=False)
    assert settings.sync.zone.key == "America/Cayenne"


def test_unknown_portal_names_veolia_portal(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "veolia: {portal: eau.example.org}", require_credentials=False)
    assert line.startswith("veolia.portal: unknown portal 'eau.example.org'")
    assert "client_id and api_url" in line


def test_unknown_portal_needs_both_client_id_and_api_url(tmp_path: Path) -> None:
    [line] = problems(
        tmp_path, "veolia: {portal: eau.example.org, client_id: abc}", require_credentials=False
    )
    assert line.startswith("veolia.portal: ")


def test_unknown_portal_with_overrides_is_accepted(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "veolia:\n  portal: eau.example.org\n  client_id: abc123\n"
        "  api_url: https://api.example.org/\n",
        require_credentials=False,
    )
    endpoints = settings.veolia.endpoints
    assert endpoints.portal == "eau.example.org"
    assert endpoints.client_id == "abc123"
    assert endpoints.api_url == "https://api.example.org"
    assert endpoints.auth_url == COGNITO_URL


@pytest.mark.parametrize("portal", sorted(PORTALS))
def test_known_portals_resolve(tmp_path: Path, portal: str) -> None:
    settings = load(tmp_path, f"veolia: {{portal: '{portal}'}}", require_credentials=False)
    assert settings.veolia.endpoints.client_id == PORTALS[portal][0]


def test_portal_given_as_url_resolves(tmp_path: Path) -> None:
    settings = load(
        tmp_path, "veolia: {portal: 'https://www.eau.veolia.fr/'}", require_credentials=False
    )
    assert settings.veolia.endpoints.client_id == PORTALS["eau.veolia.fr"][0]


def test_known_portal_accepts_overrides(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "veolia: {client_id: other, auth_url: 'http://127.0.0.1:9/'}",
        require_credentials=False,
    )
    assert settings.veolia.endpoints.client_id == "other"
    assert settings.veolia.endpoints.auth_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("value", ["5", 5])
def test_protocol_5_quoted_or_not(tmp_path: Path, value: object) -> None:
    text = "mqtt: {protocol: 5}" if isinstance(value, int) else "mqtt: {protocol: '5'}"
    assert load(tmp_path, text, require_credentials=False).mqtt.protocol == "5"


def test_protocol_default_and_bad_value(tmp_path: Path) -> None:
    assert load(tmp_path, "", require_credentials=False).mqtt.protocol == "3.1.1"
    assert load(tmp_path, "mqtt: {protocol: 3.1.1}", require_credentials=False).mqtt.protocol == (
        "3.1.1"
    )
    [line] = problems(tmp_path, "mqtt: {protocol: 4}", require_credentials=False)
    assert line.startswith("mqtt.protocol: Input should be '3.1.1' or '5'")


def test_discovery_mode(tmp_path: Path) -> None:
    settings = load(tmp_path, "mqtt: {discovery: entity}", require_credentials=False)
    assert settings.mqtt.discovery == "entity"
    [line] = problems(tmp_path, "mqtt: {discovery: both}", require_credentials=False)
    assert line.startswith("mqtt.discovery: ")


@pytest.mark.parametrize("topic", ["a/#", "a b", "/veolia", "veolia/", "a//b", "+"])
def test_base_topic_is_validated(tmp_path: Path, topic: str) -> None:
    [line] = problems(tmp_path, f"mqtt: {{base_topic: '{topic}'}}", require_credentials=False)
    assert line.startswith("mqtt.base_topic: ")


def test_base_topic_may_have_levels(tmp_path: Path) -> None:
    settings = load(tmp_path, "mqtt: {base_topic: home/water}", require_credentials=False)
    assert settings.mqtt.base_topic == "home/water"


def test_birth_topic_defaults_under_discovery_prefix(tmp_path: Path) -> None:
    settings = load(tmp_path, "mqtt: {discovery_prefix: ha}", require_credentials=False)
    assert settings.mqtt.birth_topic == "ha/status"
    settings = load(tmp_path, "mqtt: {ha_status_topic: hass/status}", require_credentials=False)
    assert settings.mqtt.birth_topic == "hass/status"


def test_tls_files_must_exist(tmp_path: Path) -> None:
    [line] = problems(
        tmp_path, f"mqtt: {{tls: {{ca_file: '{tmp_path}/ca.pem'}}}}", require_credentials=False
    )
    assert line == f"mqtt.tls.ca_file: file not found: {tmp_path}/ca.pem"


def test_tls_keyfile_needs_certfile(tmp_path: Path) -> None:
    key = secret_file(tmp_path, "client.key", "-----BEGIN PRIVATE KEY-----")
    [line] = problems(tmp_path, f"mqtt: {{tls: {{keyfile: '{key}'}}}}", require_credentials=False)
    assert line == "mqtt.tls: keyfile needs certfile"


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    settings = load(tmp_path, "log: {level: debug, format: json}", require_credentials=False)
    assert settings.log.level == "DEBUG"
    assert settings.log.format == "json"
    [line] = problems(tmp_path, "log: {level: chatty}", require_credentials=False)
    assert line.startswith("log.level: ")


def test_timeout_bounds(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "veolia: {timeout_s: 0}", require_credentials=False)
    assert line == "veolia.timeout_s: Input should be greater than 0"


# --- Jeedom --------------------------------------------------------------------------------


def test_jeedom_link_topic_accepted(tmp_path: Path) -> None:
    settings = load(
        tmp_path, "jeedom: {mqtt2_link_topic: veolia2mqtt_jeedom}", require_credentials=False
    )
    assert settings.jeedom.mqtt2_link_topic == "veolia2mqtt_jeedom"


def test_jeedom_link_topic_is_one_level(tmp_path: Path) -> None:
    [line] = problems(tmp_path, "jeedom: {mqtt2_link_topic: a/b}", require_credentials=False)
    assert line.startswith("jeedom.mqtt2_link_topic: String should match pattern")


def test_jeedom_link_topic_is_not_jeedom(tmp_path: Path) -> None:
    assert problems(tmp_path, "jeedom: {mqtt2_link_topic: jeedom}", require_credentials=False) == [
        "jeedom.mqtt2_link_topic: must differ from MQTT Manager's root topic 'jeedom'"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "jeedom: {mqtt2_link_topic: veolia2mqtt}",
        "jeedom: {mqtt2_link_topic: homeassistant}",
        "mqtt: {base_topic: water}\njeedom: {mqtt2_link_topic: water}",
        "mqtt: {discovery_prefix: ha}\njeedom: {mqtt2_link_topic: ha}",
    ],
)
def test_jeedom_link_topic_differs_from_our_roots(tmp_path: Path, text: str) -> None:
    assert problems(tmp_path, text, require_credentials=False) == [
        "jeedom.mqtt2_link_topic: must differ from mqtt.base_topic and mqtt.discovery_prefix"
    ]


CATEGORIES = ["heating", "security", "energy", "light", "opening", "automatism", "multimedia"]


@pytest.mark.parametrize("category", [*CATEGORIES, "default"])
def test_jeedom_categories_accepted(tmp_path: Path, category: str) -> None:
    settings = load(
        tmp_path, f"meters: {{X1: {{category: {category}}}}}", require_credentials=False
    )
    assert settings.meter_override("X1").category == category


@pytest.mark.parametrize("category", ["garage", "Energy", "water"])
def test_other_categories_rejected(tmp_path: Path, category: str) -> None:
    [line] = problems(
        tmp_path, f"meters: {{X1: {{category: {category}}}}}", require_credentials=False
    )
    assert line.startswith("meters.X1.category: Input should be 'heating'")


# --- meters --------------------------------------------------------------------------------


def test_meter_override_matches_by_slug(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "meters:\n  I19FA051732:\n    name: Maison\n    commands:\n"
        "      index: {name: Index, order: 3, visible: false}\n",
        require_credentials=False,
    )
    override = settings.meter_override("i19fa051732")
    assert override.name == "Maison"
    assert override.command(Metric.INDEX).name == "Index"
    assert override.command(Metric.INDEX).visible is False
    assert override.command(Metric.DAILY_CONSUMPTION).name is None
    assert settings.meter_override("OTHER").enabled is True


def test_meter_number_is_quoted_or_not(tmp_path: Path) -> None:
    settings = load(tmp_path, "meters: {'0123': {enabled: false}}", require_credentials=False)
    assert settings.meter_override("0123").enabled is False


# --- credentials ---------------------------------------------------------------------------


def test_missing_credentials_are_named(tmp_path: Path) -> None:
    lines = problems(tmp_path, "")
    assert [line.split(":")[0] for line in lines] == ["veolia.email", "veolia.password"]


def test_missing_password_alone(tmp_path: Path) -> None:
    lines = problems(tmp_path, f"veolia: {{email: {EMAIL}}}")
    assert lines == ["veolia.password: Field required (or set veolia.refresh_token)"]


def test_refresh_token_replaces_password(tmp_path: Path) -> None:
    settings = load(tmp_path, f"veolia: {{email: {EMAIL}, refresh_token: '{REFRESH_TOKEN}'}}")
    assert settings.veolia.password is None
    assert settings.veolia.refresh_token is not None


def test_demo_needs_no_credentials(tmp_path: Path) -> None:
    settings = load(tmp_path, "", require_credentials=False)
    assert settings.veolia.email is None
    assert settings.veolia.password is None


def test_credentials_from_env_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__EMAIL", EMAIL)
    monkeypatch.setenv(
        "VEOLIA2MQTT_VEOLIA__PASSWORD_FILE", str(secret_file(tmp_path, "pw", PASSWORD))
    )
    settings = load_settings()
    assert settings.veolia.email == EMAIL


def test_unreadable_file_secret_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__PASSWORD_FILE", str(tmp_path / "missing"))
    assert problems(tmp_path, "") == [
        (
            "veolia.password: cannot read the file named by VEOLIA2MQTT_VEOLIA__PASSWORD_FILE: "
            "No such file or directory"
        )
    ]


def test_directory_as_file_secret_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__PASSWORD_FILE", str(tmp_path))
    [line] = problems(tmp_path, "", require_credentials=False)
    assert line.startswith("mqtt.password: cannot read the file named by")


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load(tmp_path, "", require_credentials=False)
    with pytest.raises(ValidationError):
        settings.state_dir = Path("/elsewhere")  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.mqtt.port = 1  # type: ignore[misc]


# --- secrets never leak --------------------------------------------------------------------

SECRETS = (EMAIL, PASSWORD, REFRESH_TOKEN, MQTT_PASSWORD)
FULL = (
    f"veolia:\n  email: {EMAIL}\n  password: '{PASSWORD}'\n  refresh_token: '{REFRESH_TOKEN}'\n"
    f"mqtt:\n  username: bob\n  password: '{MQTT_PASSWORD}'\n"
)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert "hunter2" not in text
    assert "refresh-secret" not in text


def test_repr_hides_secrets(tmp_path: Path) -> None:
    settings = load(tmp_path, FULL)
    assert_no_secret(repr(settings))
    assert_no_secret(str(settings))
    assert_no_secret(repr(settings.veolia))
    assert_no_secret(repr(settings.mqtt))
    assert_no_secret(f"{settings!r} {settings.veolia}")


@pytest.mark.parametrize(
    "extra",
    [
        "  port: 99999\n",
        "  prot: 1\n",
        "  tls: {ca_file: /missing.pem}\n",
        "  base_topic: 'a/#'\n",
    ],
)
def test_config_errors_hide_secrets(tmp_path: Path, extra: str) -> None:
    assert_no_secret("\n".join(problems(tmp_path, FULL + extra)))


@pytest.mark.parametrize(
    "bad",
    [
        f"veolia:\n  email: [{EMAIL}]\n  password: '{PASSWORD}'\n",
        f"veolia:\n  email: {EMAIL}\n  password: ['{PASSWORD}']\n",
        f"veolia:\n  email: {EMAIL}\n  password: {{x: '{PASSWORD}'}}\n",
        f"veolia:\n  email: {EMAIL}\n  refresh_token: [{REFRESH_TOKEN}]\n  portal: nowhere\n",
        f"veolia:\n  email: {EMAIL}\n  password: '{PASSWORD}'\n  portal: nowhere\n",
        f"veolia:\n  email: {EMAIL}\n  password: '{PASSWORD}' oops: x\n",
        f"veolia:\n  email: {EMAIL}\n  password: '{PASSWORD}\n",
    ],
)
def test_errors_about_secret_fields_hide_the_values(tmp_path: Path, bad: str) -> None:
    assert_no_secret("\n".join(problems(tmp_path, bad)))


def test_file_secret_content_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_MQTT__PORT_FILE", str(secret_file(tmp_path, "p", PASSWORD)))
    lines = problems(tmp_path, "", require_credentials=False)
    assert lines[0].startswith("mqtt.port: Input should be a valid integer")
    assert_no_secret("\n".join(lines))


def test_env_secret_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__TIMEOUT_S", PASSWORD)
    monkeypatch.setenv("VEOLIA2MQTT_VEOLIA__EMAIL", EMAIL)
    assert_no_secret("\n".join(problems(tmp_path, "")))


# --- config.example.yaml -------------------------------------------------------------------


def test_example_loads_with_its_placeholders() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.veolia.email is not None
    assert settings.veolia.password is not None
    assert settings.mqtt.port == 1883
    override = settings.meter_override("I19FA051732")
    assert override.command(Metric.DAILY_CONSUMPTION).name == "Consommation du jour"
    assert override.command(Metric.BILLED_VOLUME).name == "Consommation facturée"
    assert override.command(Metric.INDEX).name == "Index"


def test_example_shows_defaults() -> None:
    """Every value the example shows outside the meters is the default, so copying it is safe."""
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    defaults = Settings.model_construct().model_dump(mode="json", exclude={"meters"})
    for section, values in defaults.items():
        if section == "veolia":
            continue  # the account placeholders and the default portal's endpoints
        shown = raw[section]
        if isinstance(values, dict):
            for key, value in values.items():
                assert shown[key] == value, f"{section}.{key}"
        else:
            assert Path(shown) == Path(values), section


def _model_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _missing_keys(model: type[BaseModel], data: Any, path: str) -> list[str]:
    """Dotted paths of the fields of ``model`` (recursively) that ``data`` does not spell out."""
    missing: list[str] = []
    for name, field in model.model_fields.items():
        where = f"{path}{name}"
        if not isinstance(data, dict) or name not in data:
            missing.append(where)
            continue
        value = data[name]
        annotation = field.annotation
        if (nested := _model_type(annotation)) is not None:
            missing += _missing_keys(nested, value, f"{where}.")
        elif typing.get_origin(annotation) is dict:
            item = _model_type(typing.get_args(annotation)[1])
            if item is None:
                continue
            if not value:
                missing.append(f"{where}.<key>")
                continue
            # Each key of a mapping section must appear in at least one of its entries.
            merged: dict[str, Any] = {}
            for entry in value.values():
                for key, sub in (entry or {}).items():
                    merged.setdefault(key, sub)
            missing += _missing_keys(item, merged, f"{where}.<key>.")
        elif isinstance(annotation, types.UnionType):
            assert not any(_model_type(arg) for arg in typing.get_args(annotation)), where
    return missing


def test_example_spells_out_every_setting() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert _missing_keys(Settings, raw, "") == []


def test_example_spells_out_every_command_of_the_contract() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    [meter] = raw["meters"].values()
    assert set(meter["commands"]) == {"daily_consumption", "billed_volume", "index"}


def test_example_keys_are_commented() -> None:
    """Each top-level section of the example carries an English comment."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for section in Settings.model_fields:
        match = re.search(rf"^{section}:.*$", text, flags=re.MULTILINE)
        assert match is not None, section
        before = text[: match.start()].rstrip().splitlines()[-1]
        assert "#" in match.group(0) or before.startswith("#"), section


def test_null_in_an_environment_variable_unsets_a_yaml_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        'veolia: {email: a@b.fr, password: x}\nsync: {time: "06:30"}\n', encoding="utf-8"
    )
    monkeypatch.setenv("VEOLIA2MQTT_SYNC__TIME", "null")
    assert load_settings(path).sync.time is None
