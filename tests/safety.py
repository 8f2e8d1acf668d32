"""The suite only ever talks to a demo- project on loopback."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


class UnsafeTarget(Exception):
    pass


def is_loopback(host_port: str) -> bool:
    host = host_port.rsplit(":", 1)[0].strip("[]") if ":" in host_port else host_port
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(project: str, hosts: Iterable[str]) -> None:
    if not project.startswith("demo-"):
        raise UnsafeTarget(f"refusing to test against project {project!r}: only demo- projects")
    for host in hosts:
        if not is_loopback(host):
            raise UnsafeTarget(f"refusing to test against {host!r}: only loopback addresses")
