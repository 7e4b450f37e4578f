"""IP rules: allow and deny lists of networks, checked on the real client address.

The most specific matching network decides (the longest prefix; deny wins a tie), so that
both "allow 10.0.0.0/8 but deny 10.1.2.3" and "deny 10.0.0.0/8 but allow 10.9.0.0/16" read
as written, whatever the order. No match: allowed when there is no allow list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING

from bastion.http.request import Request
from bastion.policies.base import Denied, real_client_ip

if TYPE_CHECKING:
    from bastion.config.policy_traffic import IpRules
    from bastion.plan.context import BuildContext, RouteSpec

__all__ = ["IpFilter"]

_CACHE_MAX = 4096


class IpFilter:
    kind = "ip_rules"  # the config key it comes from: what metrics and logs call it
    is_async = False

    def __init__(self, rules: IpRules, trusted: Callable[[str], bool] | None) -> None:
        entries: list[tuple[int, bool, IPv4Network | IPv6Network]] = [
            (net.prefixlen, False, net) for net in rules.deny
        ] + [(net.prefixlen, True, net) for net in rules.allow]
        # longest prefix first; at equal length deny (False) sorts first
        entries.sort(key=lambda e: (-e[0], e[1]))
        self.entries = [(allow, net) for _, allow, net in entries]
        self.default = not rules.allow
        self.trusted = trusted
        self.cache: dict[str, bool] = {}
        self.denied = Denied(403, "Requests from this address are not allowed on this route.")

    def allowed(self, ip: str) -> bool:
        verdict = self.cache.get(ip)
        if verdict is None:
            verdict = self._decide(ip)
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[ip] = verdict
        return verdict

    def _decide(self, ip: str) -> bool:
        try:
            address: IPv4Address | IPv6Address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            return self.default  # not an address (a unix socket peer): only a deny list lets it in
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for allow, net in self.entries:
            if address.version == net.version and address in net:
                return allow
        return self.default

    def on_request(self, req: Request) -> Denied | None:
        ip = real_client_ip(req, self.trusted) if self.trusted is not None else req.client_ip
        if self.allowed(ip):
            return None
        return self.denied


def build_ip_filter(spec: RouteSpec, ctx: BuildContext) -> IpFilter | None:
    """The route's IP rules (its own, else the site's), or None."""
    rules = spec.route.ip_rules or spec.site.ip_rules
    return None if rules is None else IpFilter(rules, ctx.trusted)
