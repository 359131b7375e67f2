"""The Redis URL forms and REDIS_* variables, parsed without a server."""

from __future__ import annotations

import pytest

from omnichannel.errors import ConfigError
from omnichannel.redis_config import (
    CLUSTER,
    DEFAULT_RETRY_SECONDS,
    SENTINEL,
    SINGLE,
    RedisConfig,
    RedisConfigError,
    from_rasa_options,
)
from omnichannel.settings import Settings

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-pa55"  # noqa: S105 - a test value


@pytest.mark.parametrize(
    "url, deployment, tls, nodes, db",
    [
        ("redis://127.0.0.1:6379/0", SINGLE, False, (("127.0.0.1", 6379),), 0),
        ("rediss://cache.example.com/3", SINGLE, True, (("cache.example.com", 6379),), 3),
        ("redis://[::1]:7000", SINGLE, False, (("::1", 7000),), 0),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            CLUSTER,
            False,
            (("10.0.0.1", 7000), ("10.0.0.2", 7001)),
            0,
        ),
        (
            "rediss+cluster://clustercfg.omni.use1.cache.amazonaws.com:6379",
            CLUSTER,
            True,
            (("clustercfg.omni.use1.cache.amazonaws.com", 6379),),
            0,
        ),
        (
            "redis+sentinel://s1,s2:26380/mymaster/2",
            SENTINEL,
            False,
            (("s1", 26379), ("s2", 26380)),
            2,
        ),
    ],
)
def test_url_forms(url, deployment, tls, nodes, db) -> None:
    config = RedisConfig.from_url(url)
    assert (config.deployment, config.tls, config.nodes, config.db) == (deployment, tls, nodes, db)
    assert config.retry_seconds == DEFAULT_RETRY_SECONDS


def test_sentinel_service_and_unix_socket() -> None:
    assert RedisConfig.from_url("redis+sentinel://s1/omni").service_name == "omni"
    unix = RedisConfig.from_url("unix:///run/redis/redis.sock?db=4")
    assert (unix.unix_path, unix.db, unix.nodes) == ("/run/redis/redis.sock", 4, ())


def test_credentials_come_from_the_url_or_the_environment_and_never_show() -> None:
    config = RedisConfig.from_url(f"rediss://omni:{SECRET}@h:6380/0")
    assert (config.username, config.password) == ("omni", SECRET)
    assert SECRET not in repr(config) and SECRET not in config.display()
    assert config.display() == "rediss://omni:***@h:6380/0"

    env = {"REDIS_USERNAME": "app", "REDIS_PASSWORD": "from-vault"}
    overridden = RedisConfig.from_url(f"redis://omni:{SECRET}@h/0", env)
    assert (overridden.username, overridden.password) == ("app", "from-vault")
    sentinel = RedisConfig.from_url("redis+sentinel://s1/omni", {"REDIS_SENTINEL_PASSWORD": SECRET})
    assert sentinel.sentinel_password == SECRET and sentinel.password is None
    assert SECRET not in repr(sentinel)


def test_tls_and_retry_variables() -> None:
    env = {
        "REDIS_TLS_CA_FILE": "/etc/ca.pem",
        "REDIS_TLS_CERT_FILE": "/etc/client.pem",
        "REDIS_TLS_KEY_FILE": "/etc/client.key",
        "REDIS_TLS_CHECK_HOSTNAME": "false",
        "REDIS_RETRY_SECONDS": "2.5",
    }
    config = RedisConfig.from_url("rediss+cluster://h:7000", env)
    assert (config.tls_ca_file, config.tls_cert_file, config.tls_key_file) == (
        "/etc/ca.pem",
        "/etc/client.pem",
        "/etc/client.key",
    )
    assert not config.tls_check_hostname
    assert config.retry_seconds == 2.5


@pytest.mark.parametrize(
    "url, env, reason",
    [
        ("http://h", {}, "scheme must be one of"),
        ("h:6379", {}, "no scheme"),
        ("redis://a:1,b:2", {}, "names one server"),
        ("redis://h/x", {}, "db must be a number"),
        ("redis+cluster://h/1", {}, "only database 0"),
        ("redis+sentinel://s1", {}, "service name"),
        ("redis://h:70000", {}, "1-65535"),
        ("redis://h?ssl_ca_certs=/x", {}, "unknown query parameter"),
        ("redis://h", {"REDIS_TLS_CA_FILE": "/ca.pem"}, "does not use TLS"),
        ("rediss://h", {"REDIS_TLS_CERT_FILE": "/c.pem"}, "must be set together"),
        ("redis://h", {"REDIS_RETRY_SECONDS": "soon"}, "REDIS_RETRY_SECONDS must be a number"),
        ("redis://h", {"REDIS_RETRY_SECONDS": "1000"}, "between 0 and"),
        ("redis://h", {"REDIS_TLS_CHECK_HOSTNAME": "maybe"}, "true or false"),
    ],
)
def test_unusable_settings_are_refused_with_the_reason(url, env, reason) -> None:
    with pytest.raises(RedisConfigError, match=reason) as error:
        RedisConfig.from_url(url.replace("//", f"//u:{SECRET}@", 1), env)
    assert SECRET not in str(error.value)
    assert isinstance(error.value, ConfigError)


def test_settings_refuse_a_bad_redis_url_without_quoting_its_password() -> None:
    with pytest.raises(ConfigError, match="scheme") as error:
        Settings.from_env({"REDIS_URL": f"memcached://u:{SECRET}@h"})
    assert SECRET not in str(error.value)
    settings = Settings.from_env({"REDIS_URL": "redis+cluster://h:7000", "REDIS_PASSWORD": SECRET})
    assert settings.redis.deployment == CLUSTER and settings.redis.password == SECRET


def test_rasa_store_options_map_onto_the_same_config() -> None:
    """What Rasa's RedisTrackerStore/RedisLockStore take in endpoints.yml works unchanged."""
    config = from_rasa_options(
        {},
        host="redis.internal",
        port="6380",
        db=2,
        username="omni",
        password=SECRET,
        use_ssl="true",
        ssl_ca_certs="/ca.pem",
        ssl_certfile="/c.pem",
        ssl_keyfile="/c.key",
    )
    assert config.display() == "rediss://omni:***@redis.internal:6380/2"
    assert (config.tls_ca_file, config.tls_cert_file, config.tls_key_file) == (
        "/ca.pem",
        "/c.pem",
        "/c.key",
    )
    from_env = from_rasa_options({"REDIS_URL": "redis+sentinel://s1/omni/1"})
    assert from_env.deployment == SENTINEL and from_env.db == 1
    assert from_rasa_options({}, url="redis+cluster://n1:7000").deployment == CLUSTER
    with pytest.raises(RedisConfigError, match="port applies to a single Redis host"):
        from_rasa_options({}, url="redis+cluster://n1:7000", port=7001)
