"""Which Redis to talk to, and how: one typed value for a single node, a cluster or Sentinel.

Operators describe their Redis with one URL plus a few optional variables, in the forms
redis-py, Kombu/Celery and the managed services already use:

===========================  ==============================================================
single node                  ``redis://[user:password@]host:6379/0``, ``rediss://…`` (TLS),
                             ``unix:///run/redis.sock?db=0``
Redis Cluster                ``redis+cluster://[user:password@]host:port[,host:port…]``,
                             ``rediss+cluster://…``; the hosts are seeds (one is enough: an
                             ElastiCache configuration endpoint), the rest is discovered
Sentinel                     ``redis+sentinel://[user:password@]s1:26379[,s2:26379…]/service/0``
                             (the sentinels, the master's service name, the db),
                             ``rediss+sentinel://…``
===========================  ==============================================================

``REDIS_USERNAME`` / ``REDIS_PASSWORD`` override the URL's credentials (so a secret store can
inject the password without rewriting the URL); ``REDIS_SENTINEL_USERNAME`` /
``REDIS_SENTINEL_PASSWORD`` authenticate to the sentinels when they have their own ACL;
``REDIS_TLS_CA_FILE``, ``REDIS_TLS_CERT_FILE`` and ``REDIS_TLS_KEY_FILE`` name a private CA and a
client certificate, ``REDIS_TLS_CHECK_HOSTNAME=false`` turns off the host name check for servers
reached by IP; ``REDIS_RETRY_SECONDS`` bounds how long a command is retried through a failover.

Nothing here opens a connection; :mod:`omnichannel.redis_client` builds clients from this.
Passwords never appear in ``repr``, in :meth:`RedisConfig.display` or in any error raised here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from omnichannel.errors import ConfigError

SINGLE = "single"
CLUSTER = "cluster"
SENTINEL = "sentinel"

#: URL scheme -> (deployment, TLS).
SCHEMES: Dict[str, Tuple[str, bool]] = {
    "redis": (SINGLE, False),
    "rediss": (SINGLE, True),
    "unix": (SINGLE, False),
    "redis+cluster": (CLUSTER, False),
    "rediss+cluster": (CLUSTER, True),
    "redis+sentinel": (SENTINEL, False),
    "rediss+sentinel": (SENTINEL, True),
}
DEFAULT_PORT = 6379
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_RETRY_SECONDS = 6.0
MAX_RETRY_SECONDS = 120.0


class RedisConfigError(ConfigError):
    """A Redis setting cannot work; the message names the setting and never quotes a password."""


def _flag(name: str, value: Optional[str], default: bool) -> bool:
    if value is None or not value.strip():
        return default
    text = value.strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise RedisConfigError(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class RedisConfig:
    """Everything needed to build a client; hashable, so clients can be cached per config."""

    deployment: str = SINGLE
    #: single: the server; cluster: seed nodes; sentinel: the sentinels.
    nodes: Tuple[Tuple[str, int], ...] = (("127.0.0.1", DEFAULT_PORT),)
    unix_path: Optional[str] = None
    db: int = 0
    service_name: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    sentinel_username: Optional[str] = None
    sentinel_password: Optional[str] = field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: Optional[str] = None
    tls_cert_file: Optional[str] = None
    tls_key_file: Optional[str] = None
    tls_check_hostname: bool = True
    retry_seconds: float = DEFAULT_RETRY_SECONDS

    def __post_init__(self) -> None:
        if self.deployment not in (SINGLE, CLUSTER, SENTINEL):
            raise RedisConfigError(f"unknown Redis deployment {self.deployment!r}")
        if self.deployment == CLUSTER and self.db != 0:
            raise RedisConfigError("Redis Cluster has only database 0")
        if self.deployment == SENTINEL and not self.service_name:
            raise RedisConfigError(
                "a Sentinel URL needs the master's service name: "
                "redis+sentinel://host:26379[,host:26379]/<service>/<db>"
            )
        if not 0 <= self.db <= 1_000_000:
            raise RedisConfigError(f"Redis db must be a non-negative integer, got {self.db}")
        if not 0 <= self.retry_seconds <= MAX_RETRY_SECONDS:
            raise RedisConfigError(
                f"REDIS_RETRY_SECONDS must be between 0 and {MAX_RETRY_SECONDS:.0f}"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise RedisConfigError(
                "REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE must be set together"
            )
        if (self.tls_ca_file or self.tls_cert_file) and not self.tls:
            raise RedisConfigError(
                "REDIS_TLS_* files are set but the Redis URL does not use TLS "
                "(use rediss://, rediss+cluster:// or rediss+sentinel://)"
            )

    @classmethod
    def from_url(cls, url: str, env: Optional[Mapping[str, str]] = None) -> RedisConfig:
        """Parse a Redis URL (forms in the module docstring) plus the ``REDIS_*`` overrides.

        Errors name the URL's scheme and the problem, never the URL itself: it may hold a
        password.
        """
        env = env or {}
        if not isinstance(url, str) or "://" not in url:
            raise RedisConfigError(
                "REDIS_URL must be a URL such as redis://host:6379/0 (no scheme found)"
            )
        scheme = url.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            raise RedisConfigError(
                f"REDIS_URL scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}"
            )
        deployment, tls = SCHEMES[scheme]
        parts = urlsplit(url)
        netloc = parts.netloc
        userinfo, _, hosts = netloc.rpartition("@")
        username, _, password = userinfo.partition(":")
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - {"db"})
        if unknown:
            raise RedisConfigError(
                f"REDIS_URL: unknown query parameter(s) {', '.join(unknown)} "
                "(TLS and retry settings are REDIS_TLS_* and REDIS_RETRY_SECONDS variables)"
            )
        path_parts = [unquote(p) for p in parts.path.split("/") if p]
        options: Dict[str, Any] = {"deployment": deployment, "tls": tls}
        if scheme == "unix":
            if not parts.path:
                raise RedisConfigError("a unix:// Redis URL needs the socket's path")
            options["unix_path"] = unquote(parts.path)
            options["nodes"] = ()
            path_parts = []
        else:
            default_port = DEFAULT_SENTINEL_PORT if deployment == SENTINEL else DEFAULT_PORT
            options["nodes"] = _hosts(scheme, hosts, default_port)
            if deployment == SINGLE and len(options["nodes"]) != 1:
                raise RedisConfigError(
                    f"a {scheme}:// URL names one server; for several use "
                    f"{scheme}+cluster:// or {scheme}+sentinel://"
                )
        if deployment == SENTINEL:
            if not path_parts:
                raise RedisConfigError(
                    "a Sentinel URL needs the master's service name: "
                    "redis+sentinel://host:26379[,host:26379]/<service>/<db>"
                )
            options["service_name"] = path_parts.pop(0)
        db_text = path_parts[0] if path_parts else (query.get("db") or ["0"])[0]
        if len(path_parts) > 1 or not db_text.isdigit():
            raise RedisConfigError(f"REDIS_URL: the db must be a number, in {scheme}://…/<db>")
        options["db"] = int(db_text)
        options["username"] = env.get("REDIS_USERNAME") or unquote(username) or None
        options["password"] = env.get("REDIS_PASSWORD") or unquote(password) or None
        options["sentinel_username"] = env.get("REDIS_SENTINEL_USERNAME") or None
        options["sentinel_password"] = env.get("REDIS_SENTINEL_PASSWORD") or None
        options["tls_ca_file"] = env.get("REDIS_TLS_CA_FILE") or None
        options["tls_cert_file"] = env.get("REDIS_TLS_CERT_FILE") or None
        options["tls_key_file"] = env.get("REDIS_TLS_KEY_FILE") or None
        options["tls_check_hostname"] = _flag(
            "REDIS_TLS_CHECK_HOSTNAME", env.get("REDIS_TLS_CHECK_HOSTNAME"), True
        )
        options["retry_seconds"] = _number(
            "REDIS_RETRY_SECONDS", env.get("REDIS_RETRY_SECONDS"), DEFAULT_RETRY_SECONDS
        )
        return cls(**options)

    def replace(self, **changes: Any) -> RedisConfig:
        return dataclasses.replace(self, **changes)

    def display(self) -> str:
        """The configuration as a URL fit for logs and errors: the password is left out."""
        scheme = {
            (SINGLE, False): "redis",
            (SINGLE, True): "rediss",
            (CLUSTER, False): "redis+cluster",
            (CLUSTER, True): "rediss+cluster",
            (SENTINEL, False): "redis+sentinel",
            (SENTINEL, True): "rediss+sentinel",
        }[(self.deployment, self.tls)]
        user = self.username or ""
        if self.password:
            user += ":***"
        if user:
            user += "@"
        if self.unix_path:
            return f"unix://{user}{self.unix_path}?db={self.db}"
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        service = f"/{self.service_name}" if self.service_name else ""
        return f"{scheme}://{user}{hosts}{service}/{self.db}"


def _hosts(scheme: str, text: str, default_port: int) -> Tuple[Tuple[str, int], ...]:
    nodes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise RedisConfigError(f"REDIS_URL: an empty host name in a {scheme}:// URL")
        if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise RedisConfigError(f"REDIS_URL: port of {host!r} must be 1-65535")
        nodes.append((host, int(port_text) if port_text else default_port))
    if not nodes:
        raise RedisConfigError(f"REDIS_URL: a {scheme}:// URL needs at least one host")
    return tuple(nodes)


def _number(name: str, value: Optional[str], default: float, integer: bool = False) -> float:
    if value is None or not str(value).strip():
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise RedisConfigError(f"{name} must be {kind}, got {value!r}") from None
    return number


#: The connection options of Rasa's own RedisTrackerStore/RedisLockStore (besides url/host).
RASA_CONNECTION_OPTIONS = frozenset(
    {"port", "db", "username", "password", "use_ssl", "ssl_keyfile", "ssl_certfile", "ssl_ca_certs"}
)


def from_rasa_options(
    env: Mapping[str, str],
    *,
    url: Optional[str] = None,
    host: Optional[str] = None,
    port: Any = None,
    db: Any = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    use_ssl: Any = None,
    ssl_keyfile: Optional[str] = None,
    ssl_certfile: Optional[str] = None,
    ssl_ca_certs: Optional[str] = None,
) -> RedisConfig:
    """The configuration that Rasa's ``RedisTrackerStore``/``RedisLockStore`` options describe.

    Lets a project switch from Rasa's stores by changing ``type:`` only. ``url`` or ``host`` is
    a host name or any URL :meth:`RedisConfig.from_url` accepts (default: ``REDIS_URL``);
    ``port``, ``db``, ``username``, ``password``, ``use_ssl`` and the ``ssl_*`` files then
    override what it says. The ``REDIS_*`` variables of ``env`` apply as for ``REDIS_URL``.
    """
    target = str(url or host or env.get("REDIS_URL") or LOCAL_REDIS_URL)
    if "://" not in target:
        target = f"redis://{target}"
    if use_ssl not in (None, "") and _flag("use_ssl", str(use_ssl), False):
        target = _with_tls(target)
    config = RedisConfig.from_url(target, env)
    changes: Dict[str, Any] = {}
    if port not in (None, ""):
        if config.deployment != SINGLE or config.unix_path:
            raise RedisConfigError("port applies to a single Redis host, not to this URL")
        port_number = int(_number("port", str(port), DEFAULT_PORT, integer=True))
        changes["nodes"] = ((config.nodes[0][0], port_number),)
    if db not in (None, ""):
        changes["db"] = int(_number("db", str(db), 0, integer=True))
    if username:
        changes["username"] = username
    if password:
        changes["password"] = password
    if ssl_ca_certs:
        changes["tls_ca_file"] = ssl_ca_certs
    if ssl_certfile:
        changes["tls_cert_file"] = ssl_certfile
    if ssl_keyfile:
        changes["tls_key_file"] = ssl_keyfile
    return config.replace(**changes)


def _with_tls(url: str) -> str:
    """The TLS form of a redis URL (Rasa's ``use_ssl: true``)."""
    scheme, _, rest = url.partition("://")
    if scheme in ("redis", "redis+cluster", "redis+sentinel"):
        scheme = "rediss" + scheme[len("redis") :]
    return f"{scheme}://{rest}"
