"""Configuration: the YAML file, ``VEOLIA2MQTT_*`` variables and ``*_FILE`` secrets.

Precedence, highest first: environment variables, ``*_FILE`` secrets, the YAML file, defaults.
Unknown keys are errors at every depth. :func:`load_settings` is the only entry point and turns
every problem into a :class:`~veolia2mqtt.errors.ConfigError` that names the field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from veolia2mqtt.errors import ConfigError
from veolia2mqtt.mqtt.topics import Metric, meter_slug
from veolia2mqtt.veolia.portals import DEFAULT_PORTAL, Endpoints, resolve_portal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

ENV_PREFIX: Final = "VEOLIA2MQTT_"
CONFIG_ENV: Final = "VEOLIA2MQTT_CONFIG"
DEFAULT_CONFIG_PATH: Final = Path("config.yaml")
_FILE_SUFFIX: Final = "_FILE"
_TOPIC_LEVEL: Final = r"[A-Za-z0-9_-]+"

Category = Literal[
    "heating", "security", "energy", "light", "opening", "automatism", "multimedia", "default"
]
"""Jeedom's equipment categories."""


def _field_error(field: str, message: str) -> PydanticCustomError:
    """A model-level error that :func:`_describe` reports under ``field``, not the section."""
    # The message goes through the context so that braces in it are not read as a template.
    return PydanticCustomError("field_error", "{message}", {"message": message, "subfield": field})


class _Section(BaseModel):
    """Every section forbids unknown keys: the top-level setting does not reach nested models."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VeoliaSettings(_Section):
    """The Veolia account and where it lives."""

    email: str | None = Field(None, repr=False)
    password: SecretStr | None = None
    portal: str = DEFAULT_PORTAL
    refresh_token: SecretStr | None = None
    client_id: str | None = None
    auth_url: str | None = None
    api_url: str | None = None
    timeout_s: float = Field(15, gt=0, le=300)

    @model_validator(mode="after")
    def _portal_known(self) -> Self:
        try:
            resolve_portal(
                self.portal, client_id=self.client_id, auth_url=self.auth_url, api_url=self.api_url
            )
        except ValueError as err:
            raise _field_error("portal", str(err)) from None
        return self

    @property
    def endpoints(self) -> Endpoints:
        """The portal's client id, Cognito URL and backend URL, overrides applied."""
        return resolve_portal(
            self.portal, client_id=self.client_id, auth_url=self.auth_url, api_url=self.api_url
        )


class TlsSettings(_Section):
    """TLS towards the broker; certificates are verified unless ``insecure`` is set."""

    enabled: bool = False
    ca_file: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    insecure: bool = False

    @field_validator("ca_file", "certfile", "keyfile")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        try:
            found = value is None or value.is_file()
        except OSError as err:  # e.g. a name too long for the filesystem
            msg = f"cannot read {str(value)[:80]!r}: {err.strerror}"
            raise ValueError(msg) from None
        if not found:
            msg = f"file not found: {value}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        if self.keyfile is not None and self.certfile is None:
            msg = "keyfile needs certfile"
            raise ValueError(msg)
        return self


class MqttSettings(_Section):
    """The broker connection and the topic layout."""

    host: str = Field("localhost", min_length=1)
    port: int = Field(1883, ge=1, lt=65536)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field("veolia2mqtt", min_length=1, max_length=128)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive_s: int = Field(60, ge=5, le=3600)
    tls: TlsSettings = TlsSettings()
    base_topic: str = Field("veolia2mqtt", pattern=rf"^{_TOPIC_LEVEL}(/{_TOPIC_LEVEL})*$")
    discovery_prefix: str = Field("homeassistant", pattern=rf"^{_TOPIC_LEVEL}$")
    discovery: Literal["device", "entity"] = "device"
    ha_status_topic: str | None = Field(None, pattern=r"^[^#+]+$")
    """Home Assistant's birth topic; ``None`` means ``<discovery_prefix>/status``."""

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: object) -> object:
        # YAML reads an unquoted `protocol: 5` as an integer.
        return str(value) if isinstance(value, int | float) else value

    @property
    def birth_topic(self) -> str:
        """The topic where Home Assistant announces ``online``."""
        return self.ha_status_topic or f"{self.discovery_prefix}/status"


class SyncSettings(_Section):
    """When the daily sync runs."""

    time: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "Europe/Paris"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        # OSError: a name longer than the filesystem allows when tzdata looks for the file.
        except (ZoneInfoNotFoundError, ValueError, OSError):
            msg = f"unknown time zone {value[:80]!r} (expected an IANA name such as Europe/Paris)"
            raise ValueError(msg) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The time zone as an object."""
        return ZoneInfo(self.timezone)


class JeedomSettings(_Section):
    """Opt-in extras for Jeedom."""

    mqtt2_link_topic: str | None = Field(None, pattern=rf"^{_TOPIC_LEVEL}$")

    @field_validator("mqtt2_link_topic")
    @classmethod
    def _not_jeedom_root(cls, value: str | None) -> str | None:
        if value == "jeedom":
            msg = "must differ from MQTT Manager's root topic 'jeedom'"
            raise ValueError(msg)
        return value


class LogSettings(_Section):
    """Logging; ``--log-level`` on the command line wins over ``level``."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class CommandOverride(_Section):
    """Per-command display overrides (name, visibility, enabled, order)."""

    name: str | None = Field(None, min_length=1, max_length=100)
    visible: bool = True
    enabled: bool = True
    order: int | None = Field(None, ge=0, le=999)


class MeterOverride(_Section):
    """Per-meter overrides, keyed by meter number in ``meters``."""

    enabled: bool = True
    name: str | None = Field(None, min_length=1, max_length=100)
    area: str | None = Field(None, min_length=1, max_length=100)
    category: Category | None = None
    description: str | None = Field(None, min_length=1, max_length=200)
    visible: bool = True
    commands: dict[Metric, CommandOverride] = {}

    def command(self, metric: Metric) -> CommandOverride:
        """The overrides of one command (defaults when none are configured)."""
        return self.commands.get(metric, _DEFAULT_COMMAND)


_DEFAULT_COMMAND: Final = CommandOverride()
_DEFAULT_METER: Final = MeterOverride()


class Settings(BaseSettings):
    """The whole configuration, frozen and validated."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_parse_none_str="null",  # VEOLIA2MQTT_SYNC__TIME=null unsets a YAML value
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    veolia: VeoliaSettings = VeoliaSettings()
    mqtt: MqttSettings = MqttSettings()
    sync: SyncSettings = SyncSettings()
    state_dir: Path = Path("state")
    jeedom: JeedomSettings = JeedomSettings()
    log: LogSettings = LogSettings()
    meters: dict[str, MeterOverride] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then ``*_FILE`` secrets, then the YAML (passed as init kwargs)."""
        del env_settings
        return (_EnvSource(settings_cls), _FileVariablesSource(settings_cls), init_settings)

    @model_validator(mode="after")
    def _link_topic_distinct(self) -> Self:
        link = self.jeedom.mqtt2_link_topic
        if link is not None and link in {self.mqtt.base_topic, self.mqtt.discovery_prefix}:
            msg = "must differ from mqtt.base_topic and mqtt.discovery_prefix"
            raise _field_error("jeedom.mqtt2_link_topic", msg)
        return self

    def meter_override(self, number: str) -> MeterOverride:
        """The overrides for meter ``number``, matched by its slug so case does not matter."""
        slug = meter_slug(number)
        for key, override in self.meters.items():
            if meter_slug(key) == slug:
                return override
        return _DEFAULT_METER


class _EnvSource(EnvSettingsSource):
    """``VEOLIA2MQTT_*`` variables, minus the ``*_FILE`` ones and ``VEOLIA2MQTT_CONFIG``."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        variables = {
            name: value
            for name, value in super()._load_env_vars().items()
            if not name.endswith(_FILE_SUFFIX.lower()) and name != CONFIG_ENV.lower()
        }
        # pydantic-settings skips variables that match no field; a typo must not pass silently.
        prefix = ENV_PREFIX.lower()
        unknown = [
            f"{name[len(prefix) :].split('__')[0]}: unknown key (from {name.upper()})"
            for name in sorted(variables)
            if name.lower().startswith(prefix)
            and name[len(prefix) :].split("__")[0].lower() not in self.settings_cls.model_fields
        ]
        if unknown:
            raise ConfigError(unknown)
        return variables


class _FileVariablesSource(PydanticBaseSettingsSource):
    """``VEOLIA2MQTT_<SECTION>__<KEY>_FILE=/run/secrets/x``: the file holds the value."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # noqa: ANN401
        # Unused: __call__ builds the nested mapping at once.
        del field
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, path in os.environ.items():
            upper = name.upper()
            if not upper.startswith(ENV_PREFIX) or not upper.endswith(_FILE_SUFFIX):
                continue
            keys = upper[len(ENV_PREFIX) : -len(_FILE_SUFFIX)].lower().split("__")
            dotted = ".".join(keys)
            try:
                content = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as err:
                msg = f"{dotted}: cannot read the file named by {name}: {err.strerror}"
                raise ConfigError([msg]) from None
            except UnicodeDecodeError:
                msg = f"{dotted}: the file named by {name} is not UTF-8 text"
                raise ConfigError([msg]) from None
            node = values
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = content
        return values


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        msg = f"{path}: cannot read the configuration file: {err.strerror}"
        raise ConfigError([msg]) from None
    except UnicodeDecodeError as err:
        msg = f"{path}: the configuration file is not UTF-8 text (byte {err.start})"
        raise ConfigError([msg]) from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        msg = f"{path}: invalid YAML: nested too deeply"
        raise ConfigError([msg]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "syntax error"
        msg = f"{path}: invalid YAML{where}: {problem}"
        raise ConfigError([msg]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"{path}: the top level must be a mapping of sections (veolia, mqtt, ...)"
        raise ConfigError([msg])
    # Settings(**data) needs text keys; `1: x` would raise TypeError there.
    odd = [f"{key!r}: unknown key" for key in data if not isinstance(key, str)]
    if odd:
        raise ConfigError(odd)
    return data


def _describe(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    problems = []
    for error in errors:
        parts = [str(part) for part in error["loc"] if part != "[key]"]
        field = (error.get("ctx") or {}).get("subfield")
        if field:
            parts.append(str(field))
        loc = ".".join(parts)
        msg = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{loc}: {msg}" if loc else msg)
    return problems


def config_path(explicit: str | Path | None) -> tuple[Path, bool]:
    """The configuration file to read and whether the user named it explicitly."""
    if explicit is not None:
        return Path(explicit), True
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env), True
    return DEFAULT_CONFIG_PATH, False


def load_settings(path: str | Path | None = None, *, require_credentials: bool = True) -> Settings:
    """Load and validate the configuration.

    Args:
        path: the YAML file; ``None`` means ``VEOLIA2MQTT_CONFIG`` or ``./config.yaml``.
        require_credentials: ``False`` for ``--demo``, which needs no Veolia account.

    Raises:
        ConfigError: one line per problem, each naming the field; never a secret's value.
    """
    file, explicit = config_path(path)
    data: dict[str, Any] = {}
    if explicit or file.is_file():
        data = _read_yaml(file)
    try:
        settings = Settings(**data)
    except ValidationError as err:
        raise ConfigError(_describe(err.errors(include_input=False))) from None
    except SettingsError as err:
        # A section given whole as one variable (VEOLIA2MQTT_MQTT='{...}') that is not JSON.
        found = re.search(r'field "([^"]+)"', str(err))
        section = found.group(1) if found else "environment"
        msg = f"{section}: the {ENV_PREFIX}{section.upper()} variable is not valid JSON"
        raise ConfigError([msg]) from None
    if require_credentials:
        problems = []
        if not settings.veolia.email:
            problems.append("veolia.email: Field required (the account e-mail)")
        if settings.veolia.password is None and settings.veolia.refresh_token is None:
            problems.append("veolia.password: Field required (or set veolia.refresh_token)")
        if problems:
            raise ConfigError(problems)
    return settings


def base_topic_is_one_level(settings: Settings) -> bool:
    """Whether ``mqtt.base_topic`` is one level, as MQTT Manager's equipment roots need."""
    return re.fullmatch(_TOPIC_LEVEL, settings.mqtt.base_topic) is not None
