"""The process's breakers: one per dependency and endpoint, shared by every client of that
endpoint in the process (an Elasticsearch client made per request, per step or by ``options()``
sees the failures the others saw), so the health of a dependency is learnt once per process.

    breaker("elasticsearch", target_of(url))    # made on first use
    configure("elasticsearch", BreakerConfig(...))  # thresholds from the caller's settings
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

from kb_platform.resilience.circuit_breaker import BreakerConfig, CircuitBreaker

_lock = threading.Lock()
_breakers: dict[tuple[str, str], CircuitBreaker] = {}
_configs: dict[str, BreakerConfig] = {}


def target_of(url: str) -> str:
    """``host:port`` of a URL (no credentials, no path): the breaker's endpoint label."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    host = parts.hostname or "unknown"
    host = f"[{host}]" if ":" in host else host
    default = {"https": 443, "rediss": 6380, "redis": 6379}.get(parts.scheme, 80)
    return f"{host}:{parts.port or default}"


def breaker(dependency: str, target: str, config: BreakerConfig | None = None) -> CircuitBreaker:
    """The breaker for ``dependency`` at ``target``; ``config``, when given, replaces its
    thresholds (else the dependency's configured ones, else the defaults)."""
    with _lock:
        found = _breakers.get((dependency, target))
        if found is None:
            found = _breakers[(dependency, target)] = CircuitBreaker(
                dependency, target, config or _configs.get(dependency)
            )
            return found
    if config is not None:
        found.reconfigure(config)
    return found


def configure(dependency: str, config: BreakerConfig) -> None:
    """Thresholds for every breaker of ``dependency``, present and future."""
    with _lock:
        _configs[dependency] = config
        present = [b for (name, _), b in _breakers.items() if name == dependency]
    for each in present:
        each.reconfigure(config)


def breakers() -> list[CircuitBreaker]:
    with _lock:
        return list(_breakers.values())
