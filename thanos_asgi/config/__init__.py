"""Configuration: the TOML schema (`schema`) and how files are found and loaded (`load`)."""

from thanos_asgi.config.describe import describe, redacted
from thanos_asgi.config.load import config_paths, default_config, load_config, parse_config
from thanos_asgi.config.schema import (
    AIConfig,
    ClientKeyConfig,
    Config,
    CostConfig,
    DynamicSwitchingConfig,
    HealthConfig,
    ModelsDevConfig,
    ProviderConfig,
    ProviderCost,
    ProviderHealth,
    ResponsesConfig,
    RoutingConfig,
    ServerConfig,
    StateConfig,
    TaskRoute,
    TaskTable,
    split_host_port,
)

__all__ = [
    "AIConfig",
    "ClientKeyConfig",
    "Config",
    "CostConfig",
    "DynamicSwitchingConfig",
    "HealthConfig",
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
    "config_paths",
    "default_config",
    "describe",
    "load_config",
    "parse_config",
    "redacted",
    "split_host_port",
]
