"""The configuration schema: typed, immutable msgspec Structs that refuse unknown keys.

A `Config` is built by `load_config` / `parse_config` (in `_config_load`, re-exported here) from a
TOML file, and passed down as a plain object; nothing reads the environment after loading.
`redacted` and `describe` show a loaded config without ever showing more than the last four
characters of a secret.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

import msgspec

from thanos_asgi.config.cache import CacheConfig
from thanos_asgi.config.credentials import Credential, CredentialStrategy
from thanos_asgi.config.payload import PayloadConfig
from thanos_asgi.providers import SPECS, ProviderSpec

__all__ = [
    "AIConfig",
    "ClientKeyConfig",
    "Config",
    "CostConfig",
    "DynamicSwitchingConfig",
    "HealthConfig",
    "LedgerConfig",
    "ModelsDevConfig",
    "ProviderConfig",
    "ProviderCost",
    "ProviderHealth",
    "ResponsesConfig",
    "RoutingConfig",
    "ServerConfig",
    "StateConfig",
    "TaskRoute",
    "TaskTable",
]

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Targets: TypeAlias = str | list[str]


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Every config table: keyword-only, immutable, and a typo'd key is an error."""


class ClientKeyConfig(_Section, frozen=True):
    id: str
    key: str | None = None  # secret; `${VAR}` allowed
    key_hash: str | None = None
    models: list[str] = []
    providers: list[str] = []
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    budget_usd: NonNegativeFloat | None = None
    admin: bool = False


class ServerConfig(_Section, frozen=True):
    bind: str = "127.0.0.1:8080"
    grpc: str | None = None
    max_body_bytes: PositiveInt = 10 * 1024 * 1024
    max_response_bytes: PositiveInt = 64 * 1024 * 1024  # a provider's answer read whole
    trust_env: bool = False  # providers without `proxy` use HTTPS_PROXY/HTTP_PROXY/NO_PROXY
    keepalive_seconds: PositiveFloat = 15.0
    allow_unauthenticated: bool = False
    keys: list[ClientKeyConfig] = []
    key_store: str | None = None  # SQLite file of `thanos keys`; default in the user data dir
    rpm_per_ip: PositiveInt | None = None  # requests per minute per client address, keyless
    metrics: bool = True  # serve Prometheus text at /metrics (admin-only once keys exist)
    workers: PositiveInt = 1  # `thanos serve` processes; limits across several need Redis state
    tracing: bool = False  # an OpenTelemetry span per request (needs thanos-asgi[otel])
    # most output tokens a request may ask of a model whose limit models.dev does not know
    max_output_tokens_ceiling: PositiveInt = 131_072
    tls_cert: str | None = None  # PEM certificate chain: HTTPS and gRPC over TLS
    tls_key: str | None = None  # its PEM private key
    watch_config: bool = False  # reload when the config file's content changes
    dashboard: bool = True  # the admin API (/admin/...) and the web dashboard (/dashboard)

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set tls_cert and tls_key together")

    @property
    def host(self) -> str:
        return split_host_port(self.bind)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.bind)[1]


def split_host_port(address: str) -> tuple[str, int]:
    """`"0.0.0.0:8080"` -> `("0.0.0.0", 8080)`; `"[::1]:8080"` -> `("::1", 8080)`; ValueError."""
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"put an IPv6 address in brackets, like [::1]:8080 (got {address!r})")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, like 127.0.0.1:8080 (got {address!r})")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535 (got {port})")
    return host, port


class ProviderConfig(_Section, frozen=True):
    name: str = ""  # the table name; filled by the loader
    kind: str | None = None  # explicit, or inferred from the name by the loader
    enabled: bool = True
    api_key: str | None = None  # secret; resolved by the loader (see `credential`)
    api_key_env: str | None = None
    credentials: list[Credential] = []  # a pool (`config/credentials.py`); api_key = [..] too
    credential_strategy: CredentialStrategy = "round-robin"
    base_url: str | None = None  # TOML alias: `endpoint`
    model: str | None = None  # default model of this instance
    models: list[str] = []
    max_tokens: PositiveInt | None = None
    timeout_ms: PositiveInt | None = None  # first byte and idle, unless set separately
    connect_timeout_ms: PositiveInt | None = None
    first_byte_timeout_ms: PositiveInt | None = None
    idle_timeout_ms: PositiveInt | None = None  # longest silence between stream chunks
    total_timeout_ms: PositiveInt | None = None  # a whole answer, stream included
    rate_limit_rpm: PositiveInt | None = None
    max_concurrent_requests: PositiveInt | None = None
    max_queue: NonNegativeInt | None = None  # waiters beyond max_concurrent_requests
    auth_method: Literal["api_key", "oauth"] | None = None
    use_github_auth: bool | None = None
    headers: dict[str, str] = {}
    proxy: str | None = None  # http://, https:// (CONNECT) or socks5:// (needs [socks])
    ca_file: str | None = None  # PEM certificates trusted beside the system's
    organization: str | None = None
    wire_api: Literal["chat", "responses"] = "chat"  # OpenAI-compatible kinds only
    project: str | None = None
    region: str | None = None
    credentials_file: str | None = None
    path: str | None = None  # the `claude` command, for kind claude_cli
    # Logins (Copilot device flow, Claude Pro/Max PKCE); defaults live in `thanos_asgi.logins`.
    token_dir: str | None = None  # private token files when no system keyring is usable
    oauth_client_id: str | None = None
    oauth_authorize_url: str | None = None
    oauth_token_url: str | None = None
    oauth_redirect_uri: str | None = None
    github_url: str | None = None  # GitHub Enterprise: https://<domain>
    github_api_url: str | None = None

    @property
    def credential(self) -> str | None:
        """The resolved API key, or None when this instance has none."""
        return self.api_key or None

    @property
    def spec(self) -> ProviderSpec | None:
        return SPECS.get(self.kind or "")

    @property
    def effective_base_url(self) -> str | None:
        """`base_url` as configured, else the kind's standard one (None if it has none)."""
        spec = self.spec
        return self.base_url or (spec.base_url if spec and spec.base_url else None)


class TaskTable(_Section, frozen=True):
    quick: Targets | None = None
    normal: Targets | None = None
    deep: Targets | None = None
    provider: str | None = None
    fallback: Targets | None = None
    cache_ttl_hours: NonNegativeFloat | None = None


TaskRoute: TypeAlias = str | list[str] | TaskTable


class RoutingConfig(_Section, frozen=True):
    strategy: Literal["preferred", "fallback", "round-robin", "least-latency", "omen", "task"] = (
        "fallback"
    )
    fallback_chain: list[str] = []
    aliases: dict[str, str] = {}
    max_retries: NonNegativeInt = 2  # extra rounds over the candidates after transient failures
    retry_backoff_ms: PositiveInt = 200  # first backoff; doubles each round, with jitter
    max_retry_delay_ms: PositiveInt = 10_000  # cap, also on a provider's Retry-After
    request_timeout_ms: PositiveInt | None = None  # deadline for all attempts together
    modes: dict[str, dict[str, TaskRoute]] = {}  # TOML: [routing.<mode>]

    def mode_table(self, mode: str) -> dict[str, TaskRoute] | None:
        """The task table of `mode`, spelled with `-` or `_` ("api-heavy" finds api_heavy)."""
        if mode in self.modes:
            return self.modes[mode]
        wanted = mode.replace("-", "_")
        for name, table in self.modes.items():
            if name.replace("-", "_") == wanted:
                return table
        return None


class AIConfig(_Section, frozen=True):
    mode: str | None = None
    primary_provider: str | None = None  # an instance name, or "auto"
    fallback_chain: list[str] = []


class ProviderCost(_Section, frozen=True):
    pricing_model: Literal["token", "free", "subscription"] | None = None
    input_cost_per_1m_tokens: NonNegativeFloat | None = None
    output_cost_per_1m_tokens: NonNegativeFloat | None = None
    cache_read_cost_per_1m_tokens: NonNegativeFloat | None = None
    cache_write_cost_per_1m_tokens: NonNegativeFloat | None = None
    monthly_cost: NonNegativeFloat | None = None
    monthly_budget_usd: NonNegativeFloat | None = None  # this instance's own spending cap


class CostConfig(_Section, frozen=True):
    monthly_budget_usd: NonNegativeFloat | None = None
    warn_at_percent: PositiveFloat = 80
    pause_at_percent: PositiveFloat = 100
    track_usage: bool = True
    ledger_path: str | None = None  # SQLite usage ledger; `thanos serve` defaults it
    providers: dict[str, ProviderCost] = {}


class ProviderHealth(_Section, frozen=True):
    ping_endpoint: str | None = None
    expected_models: list[str] = []
    test_prompt: str | None = None
    max_response_time_ms: PositiveInt | None = None
    check_auth: bool | None = None


class HealthConfig(_Section, frozen=True):
    check_interval_seconds: PositiveFloat = 60
    auto_disable_on_failure: bool = False
    auto_enable_on_recovery: bool = True
    failure_threshold: PositiveInt = 5
    cooldown_seconds: PositiveFloat = 30  # an open circuit lets one probe through after this
    providers: dict[str, ProviderHealth] = {}  # TOML: [health.<instance>]


class DynamicSwitchingConfig(_Section, frozen=True):
    enabled: bool = False
    rules: dict[str, str] = {}
    schedule: dict[str, str] = {}
    context: dict[str, str] = {}


class ModelsDevConfig(_Section, frozen=True):
    enabled: bool = False
    cache_ttl: NonNegativeFloat = 3600
    url: str = "https://models.dev/api.json"


class StateConfig(_Section, frozen=True):
    backend: Literal["memory", "redis"] = "memory"
    url: str | None = None
    fail_open: bool = False


class LedgerConfig(_Section, frozen=True):
    """`[ledger]`: where usage rows go. No `url`: the SQLite file `[cost] ledger_path`."""

    url: str | None = None  # "postgresql://user:password@host/db": one ledger for all replicas
    retention_days: PositiveFloat | None = None  # rows older than this are deleted; None: kept

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError("[ledger] url must be a postgresql:// URL")


class ResponsesConfig(_Section, frozen=True):
    """`[responses]`: stored Responses API answers (`previous_response_id`, `GET /v1/responses`)."""

    retention_days: PositiveFloat = 30
    store_path: str | None = None  # SQLite; `thanos serve` defaults it; shared state wins


class Config(_Section, frozen=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    ai: AIConfig = msgspec.field(default_factory=AIConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    providers: dict[str, ProviderConfig] = {}  # file order
    cost: CostConfig = msgspec.field(default_factory=CostConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    dynamic_switching: DynamicSwitchingConfig = msgspec.field(
        default_factory=DynamicSwitchingConfig
    )
    models_dev: ModelsDevConfig = msgspec.field(default_factory=ModelsDevConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    ledger: LedgerConfig = msgspec.field(default_factory=LedgerConfig)
    payload: PayloadConfig = msgspec.field(default_factory=PayloadConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    source: str = ""  # the file read, or "<defaults>"

    def enabled_providers(self) -> list[ProviderConfig]:
        return [provider for provider in self.providers.values() if provider.enabled]

    def fallback_chain(self) -> list[str]:
        """`[routing].fallback_chain`, else `[ai].fallback_chain`: the configured instances only.

        `[ai].fallback_chain` may name a known provider that has no `[providers.<name>]` table
        (the loader allows it); such entries are left out here.
        """
        chain = self.routing.fallback_chain or self.ai.fallback_chain
        return [name for name in chain if name in self.providers]

    def primary_provider(self) -> str | None:
        """The instance `auto` means: `[ai].primary_provider` if enabled, else the first enabled
        instance of the routing chain, of the `[ai]` chain, or of `[providers]`."""
        enabled = [provider.name for provider in self.enabled_providers()]
        if self.ai.primary_provider in enabled:
            return self.ai.primary_provider
        for chain in (self.routing.fallback_chain, self.ai.fallback_chain, enabled):
            for name in chain:
                if name in enabled:
                    return name
        return None
