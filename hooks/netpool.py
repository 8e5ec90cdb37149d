"""Subnets for gitd's networks, from the pool the network_pool setting names.

Docker 20.10's default address pools hold about 30 networks, and gitd makes
one per app and per service. So each new network gets a subnet of its own
from `network_pool`, cut into /25s: 125 containers besides the gateway, which
holds an app at the largest formation ps:scale allows (two process types at
20) twice over during a swap, plus one-offs; a /16 holds 512 of them.

There is no allocation table: what is taken is read each time from the
engine's networks (all of them, any driver or scope, gitd's or not) and the
host's IPv4 routes. A crash between creating a network and recording it, or
a record outliving its network, cannot happen; a subnet is free again as
soon as its network is removed. Two allocations racing (another gitd on the
engine) pick the same subnet at worst: Docker refuses the overlapping one,
and the caller picks again.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network
from pathlib import Path

from gitd.core.config import POOL_SUBNET_PREFIX as SUBNET_PREFIX
from gitd.core.errors import GitdError

ROUTES = Path("/proc/net/route")


def pool_of(setting: str) -> IPv4Network | None:
    """The validated setting (gitd.config checked it); None: Docker's defaults."""
    return ipaddress.IPv4Network(setting) if setting else None


def engine_subnets(networks_attrs: list[dict]) -> list[IPv4Network]:
    """The IPv4 subnets of every network the engine has (list attrs)."""
    subnets = []
    for attrs in networks_attrs:
        for config in ((attrs.get("IPAM") or {}).get("Config") or []):
            subnet = _ipv4(config.get("Subnet"))
            if subnet is not None:
                subnets.append(subnet)
    return subnets


def host_routes(path: Path = ROUTES) -> list[IPv4Network]:
    """The host's IPv4 routes, the default route left out (it covers
    everything and says nothing about which addresses are in use)."""
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return []
    routes = []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination = _le_address(fields[1])
            mask = _le_address(fields[7])
            network = IPv4Network(f"{destination}/{mask}", strict=False)
        except ValueError:
            continue
        if network.prefixlen:
            routes.append(network)
    return routes


def free_subnet(pool: IPv4Network, taken: list[IPv4Network],
                prefix: int = SUBNET_PREFIX) -> IPv4Network | None:
    """The lowest /prefix of `pool` that overlaps nothing in `taken`."""
    blocks = sorted((int(n.network_address), int(n.broadcast_address))
                    for n in taken if n.overlaps(pool))
    size = 2 ** (32 - prefix)
    candidate = int(pool.network_address)
    end = int(pool.broadcast_address)
    for first, last in blocks:
        if candidate + size - 1 < first:
            break
        if last >= candidate:  # overlaps or lies ahead within the candidate: skip past it
            candidate = (last // size + 1) * size
    if candidate + size - 1 > end:
        return None
    return IPv4Network((candidate, prefix))


def exhausted(pool: IPv4Network, name: str, in_pool: int) -> GitdError:
    return GitdError(
        f"cannot create network {name}: the network pool {pool} (setting network_pool) has no "
        f"free /{SUBNET_PREFIX} left ({in_pool} network(s) or route(s) use it); remove apps or "
        "services, or set network_pool to a larger private range")


def clash_with_bridge(pool: IPv4Network, networks_attrs: list[dict]) -> str | None:
    """A message when the pool overlaps the engine's own bridge (docker0) or
    the swarm's gateway bridge: their addresses are in use on every host."""
    for attrs in networks_attrs:
        if attrs.get("Name") not in ("bridge", "docker_gwbridge"):
            continue
        for subnet in engine_subnets([attrs]):
            if subnet.overlaps(pool):
                return (f"setting network_pool: {pool} overlaps the engine's {attrs['Name']} "
                        f"network ({subnet}); choose a private range apart from it")
    return None


def _ipv4(text) -> IPv4Network | None:
    try:
        return IPv4Network(text, strict=False)
    except (TypeError, ValueError):
        return None  # IPv6, or nothing


def _le_address(hex_text: str) -> str:
    """/proc/net/route writes addresses as little-endian hex."""
    return str(ipaddress.IPv4Address(int(hex_text, 16).to_bytes(4, "little")))
