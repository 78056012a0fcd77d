"""Host networking of local sandboxes: addresses, veth pairs and the firewall.

Each sandbox has its own network namespace ``ecluse-<id>`` linked to the host
by a veth pair: ``eclv<slot>`` on the host, ``eth0`` inside. Slot *n* owns the
*n*-th /30 of ``SandboxSettings.subnet``: ``.1`` is the host end (the
sandbox's default gateway), ``.2`` the sandbox. Slot 0 is reserved: its
``.1`` is the **host address** (``10.213.0.1`` by default) put on a ``dummy``
interface ``ecluse0``; the hub API and the airlock bind it so sandboxes can
reach them.

The firewall is one nftables table of our own, ``table inet ecluse``; no
other table is ever read-modified or flushed. For packets coming from a
sandbox veth (``iifname "eclv*"``) its input chain accepts established
traffic and new TCP connections to the host address on the ports that
sandbox is allowed (a set of ``interface . port`` elements), and drops
everything else; its forward chain drops everything from or to a sandbox
veth (no other sandbox, no outside address), and traffic from anywhere but
loopback or a sandbox veth to the sandbox subnet. Connections *into* a
sandbox from the host (proxy, hub) are host output traffic and allowed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

TABLE = "ecluse"
DUMMY_IFACE = "ecluse0"
VETH_PREFIX = "eclv"
NETNS_PREFIX = "ecluse-"


class NetworkError(RuntimeError):
    pass


def sh(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(list(args), input=input, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise NetworkError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


class Subnet:
    """Carves ``subnet`` into /30 slots; slot 0 holds the host address."""

    def __init__(self, cidr: str):
        self.net = ipaddress.IPv4Network(cidr, strict=True)
        if self.net.prefixlen > 28:
            raise ValueError(f"sandbox subnet {cidr} is too small (need at least a /28)")

    @property
    def host_address(self) -> str:
        return str(self.net.network_address + 1)

    @property
    def slots(self) -> int:
        return self.net.num_addresses // 4

    def addresses(self, slot: int) -> tuple[str, str]:
        """(host end, sandbox end) of ``slot``."""
        if not 1 <= slot < self.slots:
            raise ValueError(f"slot {slot} outside 1..{self.slots - 1}")
        base = self.net.network_address + 4 * slot
        return str(base + 1), str(base + 2)


def veth_name(slot: int) -> str:
    return f"{VETH_PREFIX}{slot}"


def netns_name(sandbox_id: str) -> str:
    return f"{NETNS_PREFIX}{sandbox_id}"


def netns_path(sandbox_id: str) -> str:
    return f"/run/netns/{netns_name(sandbox_id)}"


# ------------------------------------------------------------ host side


def table_exists() -> bool:
    return sh("nft", "list", "table", "inet", TABLE, check=False).returncode == 0


def table_script(subnet: Subnet) -> str:
    host = subnet.host_address
    return f"""
table inet {TABLE} {{
    set allowed {{
        type ifname . inet_service
        comment "sandbox veth . TCP port it may reach on {host}"
    }}
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        iifname "{VETH_PREFIX}*" ct state established,related accept
        iifname "{VETH_PREFIX}*" ip daddr {host} tcp flags & (syn | ack) == syn iifname . tcp dport @allowed accept
        iifname "{VETH_PREFIX}*" counter drop
        iifname != "lo" ip daddr {subnet.net} counter drop
    }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname "{VETH_PREFIX}*" counter drop
        oifname "{VETH_PREFIX}*" counter drop
        ip daddr {subnet.net} counter drop
        ip saddr {subnet.net} counter drop
    }}
}}
"""


def ensure_table(subnet: Subnet) -> None:
    """Create ``table inet ecluse`` if it is missing (call under the allocation lock)."""
    if table_exists():
        return
    sh("nft", "-f", "-", input=table_script(subnet))
    log.info("created nftables table inet %s", TABLE)


def delete_table() -> None:
    if sh("nft", "delete", "table", "inet", TABLE, check=False).returncode == 0:
        log.info("removed nftables table inet %s", TABLE)


def ensure_unreachable_route(subnet: Subnet) -> None:
    """``unreachable <subnet>``: sandbox addresses never leave this host.

    The host address and each sandbox's /30 are more specific routes and win;
    when one of them is gone (a sandbox stopped, the host network torn down
    while a hub still talks to it) packets for it are refused here instead of
    following the default route off the machine.
    """
    sh("ip", "route", "replace", "unreachable", str(subnet.net), check=False)


def delete_unreachable_route_for(addr: str) -> None:
    """Remove the ``unreachable`` route of the subnet holding ``addr``."""
    out = sh("ip", "-j", "route", "show", "type", "unreachable", check=False).stdout
    try:
        routes = json.loads(out or "[]")
    except ValueError:
        return
    for r in routes:
        dst = r.get("dst", "")
        if "/" in dst and ipaddress.ip_address(addr) in ipaddress.ip_network(dst, strict=False):
            sh("ip", "route", "del", "unreachable", dst, check=False)


def dummy_address() -> str | None:
    """The address on ``ecluse0``, if the interface exists."""
    if not Path(f"/sys/class/net/{DUMMY_IFACE}").exists():
        return None
    out = sh("ip", "-j", "addr", "show", "dev", DUMMY_IFACE, check=False).stdout
    try:
        addrs = [a["local"] for i in json.loads(out or "[]") for a in i.get("addr_info", [])]
    except (ValueError, KeyError):
        return None
    return addrs[0] if addrs else None


def address_in_use(addr: str) -> bool:
    """Whether any socket listens on ``addr`` (a hub or service bound to it)."""
    p = sh("ss", "-Hltnu", "src", addr, check=False)
    return p.returncode == 0 and bool(p.stdout.strip())


def ensure_dummy(subnet: Subnet) -> str:
    """Create ``ecluse0`` with the host address if missing; return the address."""
    addr = subnet.host_address
    ensure_unreachable_route(subnet)
    if not Path(f"/sys/class/net/{DUMMY_IFACE}").exists():
        # a dummy device if the kernel has the driver, else a bridge without ports
        # (both are local-only: nothing is ever bridged or sent through them)
        kind = "dummy"
        p = sh("ip", "link", "add", DUMMY_IFACE, "type", "dummy", check=False)
        if p.returncode != 0 and not Path(f"/sys/class/net/{DUMMY_IFACE}").exists():
            kind = "bridge"
            sh("ip", "link", "add", DUMMY_IFACE, "type", "bridge")
        _disable_ipv6(DUMMY_IFACE)
        sh("ip", "-batch", "-", input=(
            f"addr add {addr}/32 dev {DUMMY_IFACE}\n"
            f"link set {DUMMY_IFACE} up\n"))
        log.info("created %s interface %s with %s", kind, DUMMY_IFACE, addr)
    else:
        out = sh("ip", "-j", "addr", "show", "dev", DUMMY_IFACE).stdout
        have = {a["local"] for i in json.loads(out) for a in i.get("addr_info", [])}
        if addr not in have:
            sh("ip", "addr", "add", f"{addr}/32", "dev", DUMMY_IFACE)
        sh("ip", "link", "set", DUMMY_IFACE, "up")
    return addr


def delete_dummy() -> None:
    if Path(f"/sys/class/net/{DUMMY_IFACE}").exists():
        sh("ip", "link", "del", DUMMY_IFACE, check=False)


def _disable_ipv6(iface: str) -> None:
    p = Path(f"/proc/sys/net/ipv6/conf/{iface}/disable_ipv6")
    try:
        p.write_text("1")
    except OSError:
        pass


# -------------------------------------------------------- per sandbox


def create_link(sandbox_id: str, slot: int, subnet: Subnet, allowed_ports: list[int]) -> None:
    """Namespace, veth pair, addresses, default route and allowed ports."""
    ns, veth = netns_name(sandbox_id), veth_name(slot)
    host_ip, sb_ip = subnet.addresses(slot)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-batch", "-", input=(
            f"link add {veth} type veth peer name eth0 netns {ns}\n"
            f"addr add {host_ip}/30 dev {veth}\n"))
        _disable_ipv6(veth)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "-n", ns, "-batch", "-", input=(
            f"addr add {sb_ip}/30 dev eth0\n"
            "link set lo up\n"
            "link set eth0 up\n"
            f"route add default via {host_ip}\n"))
        if allowed_ports:
            elems = ", ".join(f'"{veth}" . {int(p)}' for p in sorted(set(allowed_ports)))
            sh("nft", "add", "element", "inet", TABLE, "allowed", f"{{ {elems} }}")
    except Exception:
        delete_link(sandbox_id, slot)
        raise


def delete_link(sandbox_id: str, slot: int | None, allowed_ports: list[int] | None = None) -> None:
    """Remove allowed-port elements, the veth pair and the namespace (idempotent).

    ``allowed_ports`` None means "unknown": the set is searched for the veth.
    """
    cmds = []
    if slot is not None:
        veth = veth_name(slot)
        if allowed_ports is None:
            remove_allowed(veth)
        elif allowed_ports:
            elems = ", ".join(f'"{veth}" . {int(p)}' for p in sorted(set(allowed_ports)))
            if sh("nft", "delete", "element", "inet", TABLE, "allowed", f"{{ {elems} }}",
                  check=False).returncode != 0:
                remove_allowed(veth)  # some were already gone: delete what is left
        if Path(f"/sys/class/net/{veth}").exists():
            cmds.append(f"link del {veth}")
    if os.path.exists(netns_path(sandbox_id)):
        cmds.append(f"netns del {netns_name(sandbox_id)}")
    if cmds:
        sh("ip", "-force", "-batch", "-", input="\n".join(cmds) + "\n", check=False)


def allowed_elements() -> list[tuple[str, int]]:
    p = sh("nft", "-j", "list", "set", "inet", TABLE, "allowed", check=False)
    if p.returncode != 0:
        return []
    out = []
    for item in json.loads(p.stdout).get("nftables", []):
        for e in item.get("set", {}).get("elem", []) or []:
            concat = e.get("concat") if isinstance(e, dict) else None
            if concat and len(concat) == 2:
                out.append((str(concat[0]), int(concat[1])))
    return out


def remove_allowed(veth: str) -> None:
    mine = [(i, p) for i, p in allowed_elements() if i == veth]
    if mine:
        elems = ", ".join(f'"{i}" . {p}' for i, p in mine)
        sh("nft", "delete", "element", "inet", TABLE, "allowed", f"{{ {elems} }}", check=False)


def list_netns() -> list[str]:
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith(NETNS_PREFIX)]
    except FileNotFoundError:
        return []


def list_veths() -> list[str]:
    return [n for n in os.listdir("/sys/class/net") if n.startswith(VETH_PREFIX)]
