"""Where webhooks may point: https, and only public addresses (against SSRF).

A webhook URL is checked when it is registered and again before every attempt, with a fresh
DNS lookup; the attempt then connects to the very address that was checked (the host name still
goes in ``Host`` and in TLS SNI, so certificates are verified against it). A name that resolves
to a public address at registration and to 127.0.0.1 later (DNS rebinding) is refused then.
``AURION_WEBHOOK_ALLOW_PRIVATE=true`` lifts both rules, for development and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx


class UrlNotAllowed(ValueError):
    """The URL may not receive webhooks; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send: ``url`` (the checked address in place of the host), and the ``headers``
    and request ``extensions`` that keep the original host name for HTTP and TLS."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IpAddress) -> bool:
    """False for loopback, private, link-local, multicast, reserved and unspecified addresses
    (IPv4-mapped IPv6 addresses are judged by the IPv4 address they carry)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_form(url: str, *, allow_private: bool) -> None:
    """The URL's form: absolute http(s) with a host, https unless private URLs are allowed."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise UrlNotAllowed("The URL is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlNotAllowed("The URL must be an absolute http(s) URL with a host.")
    if parts.scheme != "https" and not allow_private:
        raise UrlNotAllowed("The URL must use https.")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("The URL must not contain credentials.")


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Check ``url`` (form and, unless allowed, every address its host resolves to) and return
    where to send; ``UrlNotAllowed`` if it may not receive webhooks."""
    check_form(url, allow_private=allow_private)
    if allow_private:
        return Target(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError, ValueError) as exc:
            raise UrlNotAllowed(f"The URL's host {host!r} does not resolve.") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    refused = [a for a in addresses if not is_public(a)]
    if refused or not addresses:
        raise UrlNotAllowed(
            f"The URL's host {host!r} resolves to a loopback, private or link-local address "
            f"({refused[0] if refused else 'none'}); webhooks go to public addresses only."
        )
    pinned = addresses[0]
    netloc = f"[{pinned}]" if pinned.version == 6 else str(pinned)
    if parts.port is not None:
        netloc += f":{parts.port}"
    target = parts._replace(netloc=netloc).geturl()
    host_header = parts.netloc.rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if literal is None else {}
    return Target(target, {"Host": host_header}, extensions)
