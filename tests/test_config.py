from __future__ import annotations

import json
from pathlib import Path

import pytest

from thanos_asgi.config import (
    Config,
    ProviderConfig,
    RoutingConfig,
    ServerConfig,
    TaskTable,
    config_paths,
    default_config,
    describe,
    load_config,
    parse_config,
    redacted,
)
from thanos_asgi.exceptions import ConfigError

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seed-configs"
MULTILINE = "hybrid-multiline-inline-table.toml"
SECRET = "sk-test-SECRET-1234567890"
KEYS = {"ANTHROPIC_API_KEY": "sk-ant-test-key-abcd", "OPENAI_API_KEY": "sk-openai-test-wxyz"}


def seed(name: str, env: dict[str, str] | None = None) -> Config:
    return load_config(SEEDS / name, env=KEYS if env is None else env)


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, source="thanos.toml", env=env or {})


def refused(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value


# --- the users' seed configs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", sorted(path.name for path in SEEDS.glob("*.toml") if path.name != MULTILINE)
)
def test_every_seed_config_loads_as_it_is(name: str) -> None:
    for env in ({}, KEYS):
        config = seed(name, env)
        assert config.source == str(SEEDS / name)
        assert all(provider.kind for provider in config.providers.values())


def test_api_heavy() -> None:
    config = seed("api-heavy.toml")
    assert config.ai.mode == "api-heavy"
    assert config.ai.primary_provider == "claude"
    assert config.ai.fallback_chain == ["claude", "copilot", "gpt4", "ollama"]
    assert list(config.providers) == ["claude", "copilot", "gpt4", "ollama"]
    kinds = {name: provider.kind for name, provider in config.providers.items()}
    assert kinds == {
        "claude": "anthropic",
        "copilot": "copilot",
        "gpt4": "openai",
        "ollama": "ollama",
    }
    claude = config.providers["claude"]
    assert claude.name == "claude"
    assert claude.api_key_env == "ANTHROPIC_API_KEY"
    assert claude.credential == KEYS["ANTHROPIC_API_KEY"]
    assert (claude.model, claude.max_tokens, claude.rate_limit_rpm) == (
        "claude-3-5-sonnet-20241022",
        8192,
        50,
    )
    assert config.providers["copilot"].use_github_auth is True
    assert config.providers["copilot"].credential is None
    assert config.providers["gpt4"].credential == KEYS["OPENAI_API_KEY"]
    assert config.providers["gpt4"].max_tokens == 4096
    assert config.providers["ollama"].base_url == "http://localhost:11434"
    assert config.providers["ollama"].models == ["codellama:13b"]
    assert list(config.routing.modes) == ["api_heavy"]
    table = config.routing.mode_table("api-heavy")
    assert table is not None
    assert table["completion"] == "copilot"
    assert table["review"] == ["claude", "gpt4"]
    assert table["semantic_search"] == "claude"
    assert list(table) == [
        "completion",
        "chat",
        "review",
        "explain",
        "refactor",
        "commit_msg",
        "semantic_search",
    ]
    assert config.routing.strategy == "fallback"
    assert config.fallback_chain() == ["claude", "copilot", "gpt4", "ollama"]
    assert config.primary_provider() == "claude"


def test_architecture() -> None:
    config = seed("architecture.toml")
    assert (config.server.bind, config.server.host, config.server.port) == (
        "0.0.0.0:8080",
        "0.0.0.0",
        8080,
    )
    assert config.server.grpc == "0.0.0.0:50051"
    assert config.routing.strategy == "omen"
    assert config.routing.fallback_chain == ["anthropic", "openai", "ollama"]
    kinds = {name: provider.kind for name, provider in config.providers.items()}
    assert kinds == {
        "anthropic": "anthropic",
        "anthropic_max": "anthropic",
        "openai": "openai",
        "xai": "xai",
        "gemini": "gemini",
        "github_copilot": "copilot",
        "ollama": "ollama",
        "omen": "omen",
    }
    providers = config.providers
    assert providers["anthropic"].auth_method == "oauth"
    assert providers["anthropic"].credential == KEYS["ANTHROPIC_API_KEY"]
    # An OAuth instance is not handed the standard API key it never asked for.
    assert providers["anthropic_max"].credential is None
    assert providers["openai"].auth_method == "api_key"
    assert providers["xai"].model == "grok-2-latest"
    assert providers["xai"].credential is None  # ${XAI_API_KEY} unset: no key, no error
    assert providers["ollama"].base_url == "http://localhost:11434"  # from `endpoint`
    assert providers["omen"].base_url == "http://localhost:3000"
    assert providers["omen"].credential is None  # ${OMEN_API_KEY} unset
    assert (config.models_dev.enabled, config.models_dev.cache_ttl) == (True, 3600.0)
    assert config.models_dev.url == "https://models.dev/api.json"
    assert config.primary_provider() == "anthropic"


def test_architecture_gemini_key_from_google_api_key() -> None:
    config = seed("architecture.toml", {"GOOGLE_API_KEY": "google-key-0000"})
    assert config.providers["gemini"].credential == "google-key-0000"


def test_complete_hybrid() -> None:
    config = seed("complete-hybrid.toml")
    assert (config.ai.mode, config.ai.primary_provider) == ("hybrid", "auto")
    assert [p.name for p in config.enabled_providers()] == ["ollama", "copilot", "claude"]
    assert config.providers["gpt4"].enabled is False
    assert (config.providers["grok"].kind, config.providers["grok"].enabled) == ("xai", False)
    ollama = config.providers["ollama"]
    assert (ollama.timeout_ms, ollama.max_concurrent_requests) == (30000, 4)
    assert ollama.models == ["codellama:13b", "mistral:7b", "llama3:8b"]
    hybrid = config.routing.modes["hybrid"]
    assert hybrid["completion"] == "ollama"
    assert hybrid["chat"] == ["ollama", "copilot"]
    assert hybrid["review"] == TaskTable(
        quick="ollama", normal=["ollama", "claude"], deep=["claude"]
    )
    assert hybrid["semantic_search"] == TaskTable(
        provider="ollama", fallback="claude", cache_ttl_hours=24.0
    )
    assert hybrid["refactor"] == ["ollama", "claude"]
    assert config.primary_provider() == "ollama"  # "auto": first enabled of [ai].fallback_chain


def test_complete_hybrid_cost_health_and_switching() -> None:
    config = seed("complete-hybrid.toml")
    cost = config.cost
    assert (cost.monthly_budget_usd, cost.warn_at_percent, cost.pause_at_percent) == (25, 80, 95)
    assert cost.track_usage is True
    assert cost.providers["claude"].input_cost_per_1m_tokens == 3.0
    assert cost.providers["claude"].output_cost_per_1m_tokens == 15.0
    assert cost.providers["copilot"].monthly_cost == 10.0
    assert cost.providers["ollama"].pricing_model == "free"
    health = config.health
    assert (health.check_interval_seconds, health.failure_threshold) == (60, 3)
    assert (health.auto_disable_on_failure, health.auto_enable_on_recovery) == (True, True)
    assert list(health.providers) == ["ollama", "claude", "copilot"]
    assert health.providers["ollama"].ping_endpoint == "http://localhost:11434/api/tags"
    assert health.providers["ollama"].expected_models == ["codellama:13b"]
    assert health.providers["claude"].test_prompt == "Hello"
    assert health.providers["claude"].max_response_time_ms == 5000
    assert health.providers["copilot"].check_auth is True
    switching = config.dynamic_switching
    assert switching.enabled is True
    assert switching.rules == {
        "at_80_percent_budget": "ollama-heavy",
        "at_95_percent_budget": "ollama-only",
    }
    assert switching.schedule == {}
    assert switching.context["production_files"] == "hybrid"


def test_cost() -> None:
    cost = seed("cost.toml").cost
    models = {name: entry.pricing_model for name, entry in cost.providers.items()}
    assert models == {
        "claude": "token",
        "gpt4": "token",
        "copilot": "subscription",
        "ollama": "free",
    }
    assert cost.providers["gpt4"].output_cost_per_1m_tokens == 30.0
    assert cost.providers["copilot"].monthly_cost == 10.0
    assert (cost.monthly_budget_usd, cost.warn_at_percent, cost.pause_at_percent) == (None, 80, 100)


def test_dynamic_switching() -> None:
    config = seed("dynamic-switching.toml")
    switching = config.dynamic_switching
    assert switching.enabled is True
    assert switching.rules["at_50_percent_budget"] == "hybrid"
    assert list(switching.rules) == [
        "at_50_percent_budget",
        "at_80_percent_budget",
        "at_95_percent_budget",
    ]
    assert switching.schedule == {
        "weekday_9_to_5": "api-heavy",
        "weekday_evening": "hybrid",
        "weekend": "ollama-heavy",
    }
    assert switching.context["test_files"] == "ollama-heavy"
    assert config.providers == {}
    assert config.primary_provider() is None


def test_health() -> None:
    health = seed("health.toml").health
    assert list(health.providers) == ["ollama", "claude", "copilot", "gpt4"]
    assert health.providers["gpt4"].max_response_time_ms == 5000
    assert health.providers["copilot"].test_prompt is None


def test_ollama_heavy_names_an_unconfigured_known_provider_in_its_ai_chain() -> None:
    config = seed("ollama-heavy.toml")
    assert config.ai.fallback_chain == ["ollama", "claude", "copilot"]  # kept as written
    assert config.fallback_chain() == ["ollama", "claude"]  # copilot has no table: skipped
    assert config.primary_provider() == "ollama"
    table = config.routing.mode_table("ollama-heavy")
    assert table is not None
    assert table["review"] == ["ollama", "claude"]
    assert "not configured, skipped: copilot" in describe(config)


def test_readme_quickstart() -> None:
    config = seed("readme-quickstart.toml")
    assert list(config.providers) == ["anthropic", "openai", "ollama", "omen"]
    assert config.providers["ollama"].base_url == "http://localhost:11434"
    assert config.providers["ollama"].model == "codellama:latest"
    assert config.providers["omen"].kind == "omen"
    assert config.providers["openai"].credential == KEYS["OPENAI_API_KEY"]
    assert config.routing.strategy == "omen"
    assert config.fallback_chain() == ["anthropic", "openai", "ollama"]


def test_multiline_inline_table_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigError) as info:
        seed(MULTILINE)
    message = str(info.value)
    assert MULTILINE in message
    assert "line 36, column 11" in message
    assert "invalid TOML" in message
    assert "inline tables must fit on one line in TOML 1.0" in message
    assert "[routing.hybrid.review]" in message


def test_other_toml_errors_have_line_and_column_without_the_hint() -> None:
    error = refused('[server]\nbind = "127.0.0.1:8080\n')
    assert str(error).startswith("thanos.toml: ")
    assert "invalid TOML" in str(error)
    assert "inline tables" not in str(error)
    assert "line 2, column" in refused("[server]\nbind = = 1\n").message


def test_inline_table_hint_ignores_braces_inside_strings() -> None:
    error = refused('[routing]\naliases = { fast = "{",\n  smart = "x" }\n')
    assert "use a [routing.aliases] table instead" in str(error)
    assert "inline tables" not in str(refused('x = "{" = 1\n'))


# --- ${VAR} interpolation and keys --------------------------------------------------------------


def test_interpolation_set_unset_and_default() -> None:
    text = """
    [providers.openai]
    model = "${MODEL}"
    base_url = "https://${HOST:-api.openai.com}/v1"
    organization = "${ORG:-acme}"
    models = ["${MODEL}-mini", "plain"]
    headers = { "${HEADER}" = "${VALUE}" }
    """
    config = parse(text, {"MODEL": "gpt-4o", "HOST": "proxy.local", "VALUE": "v"})
    openai = config.providers["openai"]
    assert openai.model == "gpt-4o"
    assert openai.base_url == "https://proxy.local/v1"
    assert openai.organization == "acme"
    assert openai.models == ["gpt-4o-mini", "plain"]
    assert openai.headers == {"${HEADER}": "v"}  # keys are not interpolated
    assert parse(text, {"ORG": ""}).providers["openai"].organization == "acme"
    assert parse(text).providers["openai"].model == ""


def test_unset_api_key_variable_means_no_key() -> None:
    config = parse('[providers.openai]\napi_key = "${NOT_EXPORTED}"')
    assert config.providers["openai"].api_key is None
    assert config.providers["openai"].credential is None


def test_api_key_env_names_the_variable() -> None:
    text = '[providers.openai]\napi_key_env = "WORK_OPENAI_KEY"'
    config = parse(text, {"WORK_OPENAI_KEY": "sk-work", "OPENAI_API_KEY": "sk-standard"})
    assert config.providers["openai"].credential == "sk-work"
    config = parse(text, {"OPENAI_API_KEY": "sk-standard"})
    assert config.providers["openai"].credential == "sk-standard"  # standard fallback
    assert parse(text).providers["openai"].credential is None


def test_api_key_beats_api_key_env() -> None:
    text = '[providers.xai]\napi_key = "${MINE}"\napi_key_env = "OTHER"'
    config = parse(text, {"MINE": "from-api-key", "OTHER": "from-env"})
    assert config.providers["xai"].credential == "from-api-key"


def test_standard_key_variable_fallback() -> None:
    config = parse("[providers.grok]\n[providers.google]\n", {"XAI_API_KEY": "xai-k"})
    assert config.providers["grok"].credential == "xai-k"
    assert config.providers["google"].credential is None
    config = parse("[providers.google]\n", {"GEMINI_API_KEY": "", "GOOGLE_API_KEY": "g-k"})
    assert config.providers["google"].credential == "g-k"


def test_standard_key_is_not_sent_to_a_custom_base_url() -> None:
    text = '[providers.local]\nkind = "openai"\nbase_url = "http://127.0.0.1:8000/v1"'
    config = parse(text, {"OPENAI_API_KEY": "sk-standard"})
    assert config.providers["local"].credential is None
    text = '[providers.openai]\nbase_url = "https://api.openai.com/v1/"'
    assert parse(text, {"OPENAI_API_KEY": "k"}).providers["openai"].credential == "k"


# --- discovery and defaults ------------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".config" / "thanos").mkdir(parents=True)
    work.mkdir()
    monkeypatch.chdir(work)
    return {
        "home": home,
        "user": home / ".config" / "thanos" / "config.toml",
        "local": work / "thanos.toml",
        "explicit": tmp_path / "explicit.toml",
    }


def _write(path: Path, model: str) -> None:
    path.write_text(f'[providers.ollama]\nmodel = "{model}"\n')


def test_discovery_order(places: dict[str, Path]) -> None:
    env = {"HOME": str(places["home"]), "THANOS_CONFIG": str(places["explicit"])}
    for name in ("user", "local", "explicit"):
        _write(places[name], name)
    assert load_config(env=env).providers["ollama"].model == "explicit"
    del env["THANOS_CONFIG"]
    assert load_config(env=env).providers["ollama"].model == "local"
    assert load_config(env=env).source == "thanos.toml"
    places["local"].unlink()
    config = load_config(env=env)
    assert config.providers["ollama"].model == "user"
    assert config.source == str(places["user"])


@pytest.mark.skipif(Path("/etc/thanos/config.toml").exists(), reason="a system config exists")
def test_no_file_at_all_gives_the_defaults(places: dict[str, Path]) -> None:
    config = load_config(env={"HOME": str(places["home"])})
    assert config.source == "<defaults>"
    assert list(config.providers) == ["ollama"]


def test_config_paths(places: dict[str, Path]) -> None:
    env = {"HOME": str(places["home"]), "THANOS_CONFIG": "/x/y.toml"}
    assert config_paths(env) == [
        Path("/x/y.toml"),
        Path("thanos.toml"),
        places["user"],
        Path("/etc/thanos/config.toml"),
    ]
    assert config_paths({}) == [Path("thanos.toml"), Path("/etc/thanos/config.toml")]


def test_thanos_config_naming_a_missing_file_is_an_error(places: dict[str, Path]) -> None:
    _write(places["local"], "local")
    missing = str(places["explicit"])
    with pytest.raises(ConfigError) as info:
        load_config(env={"THANOS_CONFIG": missing})
    assert missing in str(info.value)
    assert "does not exist" in str(info.value)


def test_an_explicit_path_that_cannot_be_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", env={})
    (tmp_path / "bad.toml").write_bytes(b"x = '\xff'")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bad.toml", env={})


def test_default_config_without_keys() -> None:
    config = default_config({})
    assert config.source == "<defaults>"
    assert list(config.providers) == ["ollama"]
    ollama = config.providers["ollama"]
    assert (ollama.kind, ollama.base_url, ollama.credential) == (
        "ollama",
        "http://localhost:11434",
        None,
    )


def test_default_config_with_keys() -> None:
    env = {
        "OPENAI_API_KEY": "sk-o",
        "ANTHROPIC_API_KEY": "sk-a",
        "GOOGLE_API_KEY": "g",
        "GROQ_API_KEY": "",
        "OLLAMA_HOST": "0.0.0.0",
    }
    config = default_config(env)
    assert list(config.providers) == ["ollama", "openai", "anthropic", "gemini"]
    assert config.providers["ollama"].base_url == "http://0.0.0.0:11434"
    assert config.providers["openai"].credential == "sk-o"
    assert config.providers["gemini"].kind == "gemini"
    assert config.providers["gemini"].credential == "g"
    assert default_config({"OLLAMA_HOST": "https://ollama.example"}).providers[
        "ollama"
    ].base_url == ("https://ollama.example")


# --- refusals, with the key path -------------------------------------------------------------


def test_unknown_key_is_refused_with_its_path() -> None:
    error = refused('[providers.openai]\nmodle = "gpt-4o"')
    assert error.path == "providers.openai.modle"
    assert error.source == "thanos.toml"
    assert "unknown key" in error.reason
    assert "did you mean 'model'" in error.reason
    assert str(error).startswith("thanos.toml: providers.openai.modle: unknown key")
    assert refused("colour = 1").path == "colour"
    assert refused("[routing]\nstrategyy = 'fallback'").path == "routing.strategyy"


def test_wrong_type_is_refused_with_path_and_reason() -> None:
    error = refused('[providers.claude]\nmax_tokens = "lots"')
    assert error.path == "providers.claude.max_tokens"
    assert "Expected int, got str" in error.reason
    error = refused("[providers.claude]\ntimeout_ms = 0")
    assert error.path == "providers.claude.timeout_ms"
    assert ">= 1" in error.reason


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[routing.hybrid]\nreview = 5", "routing.hybrid.review"),
        ("[routing.hybrid.review]\nquik = 'ollama'", "routing.hybrid.review.quik"),
        ("[routing.hybrid.review]\nquick = 5", "routing.hybrid.review.quick"),
        ("[health.ollama]\nmax_response_time_ms = -1", "health.ollama.max_response_time_ms"),
        ("[health]\nfailure_threshold = 0", "health.failure_threshold"),
        ("[cost.providers.claude]\nmonthly_cost = 'ten'", "cost.providers.claude.monthly_cost"),
        ("[dynamic_switching.rules]\nat_80 = 80", "dynamic_switching.rules.at_80"),
        (
            '[providers."my.box"]\nkind = "ollama"\nheaders = {X = 1}',
            'providers."my.box".headers.X',
        ),
        ("[providers.ollama]\nendpoint = 5", "providers.ollama.endpoint"),
        ("[[server.keys]]\nkey = 'k'", "server.keys[0].id"),
        ("[state]\nbackend = 'etcd'", "state.backend"),
        ("providers = 3", "providers"),
    ],
)
def test_refusals_name_the_toml_key_path(text: str, path: str) -> None:
    assert refused(text).path == path


def test_a_choice_is_refused_listing_the_choices() -> None:
    error = refused('[routing]\nstrategy = "fastest"')
    assert error.path == "routing.strategy"
    assert "'fallback'" in error.reason
    assert "'least-latency'" in error.reason


def test_unknown_instance_name_without_kind_is_refused() -> None:
    error = refused('[providers.work]\nmodel = "x"')
    assert error.path == "providers.work"
    assert "kind" in error.reason
    assert "openai-compatible" in error.reason
    config = parse('[providers.work]\nkind = "openai-compatible"\nbase_url = "http://h/v1"')
    assert config.providers["work"].kind == "openai-compatible"


def test_unknown_kind_is_refused() -> None:
    error = refused('[providers.work]\nkind = "openia"')
    assert error.path == "providers.work.kind"
    assert "valid kinds" in error.reason


def test_endpoint_and_base_url_together_are_refused() -> None:
    error = refused('[providers.ollama]\nendpoint = "http://a"\nbase_url = "http://b"')
    assert error.path == "providers.ollama.endpoint"


@pytest.mark.parametrize("bind", ["localhost", "127.0.0.1:0", "127.0.0.1:65536", ":80", "::1:80"])
def test_bad_bind_is_refused(bind: str) -> None:
    assert refused(f'[server]\nbind = "{bind}"').path == "server.bind"


def test_bad_grpc_address_is_refused() -> None:
    assert refused('[server]\ngrpc = "50051"').path == "server.grpc"


def test_fallback_chain_entry_naming_no_instance_is_refused() -> None:
    error = refused('[routing]\nfallback_chain = ["ollama", "olama"]\n[providers.ollama]')
    assert error.path == "routing.fallback_chain[1]"
    assert "'olama'" in error.reason
    assert "'ollama'" in error.reason
    # A provider name that is not configured is refused in [routing] ...
    assert refused('[routing]\nfallback_chain = ["openai"]').path == "routing.fallback_chain[0]"
    # ... while [ai] chains (the seed configs' own section) may name it, and it is skipped.
    assert refused('[ai]\nfallback_chain = ["nonesuch"]').path == "ai.fallback_chain[0]"
    assert parse('[ai]\nfallback_chain = ["copilot"]').fallback_chain() == []


def test_primary_provider_must_name_an_instance_or_auto() -> None:
    assert refused('[ai]\nprimary_provider = "claude"').path == "ai.primary_provider"
    assert parse('[ai]\nprimary_provider = "auto"').ai.primary_provider == "auto"


def test_alias_targets() -> None:
    config = parse(
        '[routing]\naliases = { fast = "ollama/llama3:8b", big = "gpt-4o", "a/b" = "x/y/z" }'
    )
    assert config.routing.aliases["fast"] == "ollama/llama3:8b"
    for target in ("", "ollama/", "/m", "two words"):
        error = refused(f'[routing]\naliases = {{ fast = "{target}" }}')
        assert error.path == "routing.aliases.fast"


def test_client_keys() -> None:
    text = '[[server.keys]]\nid = "ci"\nkey = "${CI_KEY}"\nmodels = ["gpt-4o"]\nrpm = 60'
    key = parse(text, {"CI_KEY": "client-key-123"}).server.keys[0]
    assert (key.id, key.key, key.models, key.rpm, key.admin) == (
        "ci",
        "client-key-123",
        ["gpt-4o"],
        60,
        False,
    )
    assert refused(text).path == "server.keys[0]"  # its ${VAR} is unset: no key at all


def test_source_is_not_a_config_key() -> None:
    assert refused('source = "elsewhere"').path == "source"


# --- secrets ---------------------------------------------------------------------------------


SECRET_CONFIG = f"""
[server]
[[server.keys]]
id = "team"
key = "${{TEAM_KEY}}"
[[server.keys]]
id = "hashed"
key_hash = "sha256:0123456789abcdef0123"

[providers.openai]
api_key = "{SECRET}"
headers = {{ Authorization = "Bearer {SECRET}", "X-Api-Key" = "k", "X-Team" = "blue" }}

[providers.anthropic]

[state]
backend = "redis"
url = "redis://:{SECRET}@cache:6379/0"
"""


def test_redacted_never_shows_a_secret() -> None:
    config = parse(SECRET_CONFIG, {"TEAM_KEY": "team-SECRET-key-9876"})
    data = redacted(config)
    dumped = json.dumps(data)
    assert "SECRET" not in dumped
    assert "0123456789abcdef" not in dumped
    openai = data["providers"]["openai"]
    assert openai["api_key"] == "****7890"
    assert openai["headers"] == {"Authorization": "****7890", "X-Api-Key": "****", "X-Team": "blue"}
    assert data["server"]["keys"][0]["key"] == "****9876"
    assert data["state"]["url"] == "redis://:****7890@cache:6379/0"
    assert data["source"] == "thanos.toml"
    assert config.providers["openai"].credential == SECRET  # the config itself keeps it


def test_describe_never_shows_a_secret() -> None:
    config = parse(SECRET_CONFIG, {"TEAM_KEY": "team-SECRET-key-9876"})
    text = describe(config)
    assert "SECRET" not in text
    assert "thanos.toml" in text
    assert "set (****7890)" in text
    assert "missing (set ANTHROPIC_API_KEY)" in text


def test_describe_lists_the_config() -> None:
    text = describe(seed("architecture.toml"))
    for expected in (
        "architecture.toml",
        "http 0.0.0.0:8080, grpc 0.0.0.0:50051",
        "strategy omen",
        "anthropic -> openai -> ollama",
        "omen: kind omen, enabled, base_url http://localhost:3000",
        "key set (****abcd)",
        "xai: kind xai, enabled, base_url https://api.x.ai/v1, model grok-2-latest",
        "key missing (set XAI_API_KEY)",
        "anthropic_max: kind anthropic",
    ):
        assert expected in text
    text = describe(
        parse('[routing]\naliases = { fast = "ollama/llama3:8b" }\n[ai]\nmode = "hybrid"')
    )
    assert "alias fast -> ollama/llama3:8b" in text
    assert "mode hybrid" in text


@pytest.mark.parametrize(
    "line",
    [
        'max_tokens = "lots"',
        f'auth_method = "{SECRET}"',
        f'headers = {{ X = ["{SECRET}"] }}',
        f'api_key = [1, "{SECRET}"]',  # (a list of strings is a credential pool)
    ],
)
def test_errors_do_not_echo_a_secret(line: str) -> None:
    key_line = "" if line.startswith("api_key") else f'api_key = "{SECRET}"\n'
    error = refused(f"[providers.openai]\n{key_line}{line}")
    assert "SECRET" not in str(error)
    assert error.path.startswith("providers.openai.")


# --- the schema itself -----------------------------------------------------------------------


def test_defaults() -> None:
    config = Config()
    assert config.server.bind == "127.0.0.1:8080"
    assert (config.server.max_body_bytes, config.server.keepalive_seconds) == (10485760, 15.0)
    assert config.server.grpc is None
    assert config.routing.strategy == "fallback"
    assert (config.state.backend, config.state.fail_open) == ("memory", False)
    assert config.models_dev.enabled is False
    assert config.server.keys is not Config().server.keys


@pytest.mark.parametrize(
    ("bind", "host", "port"),
    [
        ("0.0.0.0:8080", "0.0.0.0", 8080),
        ("[::1]:9000", "::1", 9000),
        ("localhost:1", "localhost", 1),
    ],
)
def test_host_and_port(bind: str, host: str, port: int) -> None:
    server = ServerConfig(bind=bind)
    assert (server.host, server.port) == (host, port)


def test_mode_table_either_spelling() -> None:
    routing = RoutingConfig(modes={"api_heavy": {"chat": "a"}, "ollama-only": {"chat": "b"}})
    assert routing.mode_table("api-heavy") == {"chat": "a"}
    assert routing.mode_table("api_heavy") == {"chat": "a"}
    assert routing.mode_table("ollama_only") == {"chat": "b"}
    assert routing.mode_table("hybrid") is None


def test_primary_provider_choice() -> None:
    text = """
    [ai]
    primary_provider = "claude"
    fallback_chain = ["gpt4", "ollama"]
    [providers.claude]
    enabled = false
    [providers.ollama]
    [providers.gpt4]
    """
    config = parse(text)
    assert config.primary_provider() == "gpt4"  # claude is disabled: first of [ai] chain
    assert [p.name for p in config.enabled_providers()] == ["ollama", "gpt4"]
    assert parse(text + "[routing]\nfallback_chain = ['ollama']").primary_provider() == "ollama"
    no_chains = "[providers.ollama]\nenabled = false\n[providers.openai]"
    assert parse(no_chains).primary_provider() == "openai"  # first enabled provider
    assert parse("[providers.ollama]\nenabled = false").primary_provider() is None


def test_config_is_immutable() -> None:
    config = parse("[providers.ollama]")
    with pytest.raises(AttributeError):
        config.providers["ollama"].enabled = False  # type: ignore[misc]


def test_provider_effective_base_url() -> None:
    assert ProviderConfig(kind="openai").effective_base_url == "https://api.openai.com/v1"
    assert ProviderConfig(kind="vertex").effective_base_url is None
    assert ProviderConfig(kind="ollama", base_url="http://h:1").effective_base_url == "http://h:1"
