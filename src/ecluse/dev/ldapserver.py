"""Embedded OpenLDAP (``slapd``) for development, demos and tests.

:class:`EmbeddedSlapd` writes a ``slapd.conf`` under a directory of its own,
starts Debian's ``slapd`` on a loopback port, and seeds a directory:

* ``ou=people`` — posixAccount/inetOrgPerson users with uid/gid numbers;
* ``ou=groups`` — project groups (``groupOfNames`` with ``member`` and a
  ``gidNumber``), the output-checker group (``groupOfUniqueNames`` with
  ``uniqueMember``) and the staff group (``posixGroup`` with ``memberUid``),
  so all three membership styles are exercised;
* ``ou=services`` — the service account Écluse binds as for searches.

It is the same directory a hospital's OpenLDAP would serve, on loopback.
Production deployments point ``ldap.uri`` at the hospital directory instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
from ldap3.core.exceptions import LDAPEntryAlreadyExistsResult, LDAPException

from ..hub.mfa import new_secret

log = logging.getLogger(__name__)

SCHEMAS = ["core", "cosine", "nis", "inetorgperson"]
SLAPD_CANDIDATES = ["/usr/sbin/slapd", "/usr/local/sbin/slapd", "/usr/local/libexec/slapd"]
MODULE_DIRS = ["/usr/lib/ldap", "/usr/lib64/openldap", "/usr/lib/openldap"]


def ssha(password: str) -> str:
    """An ``{SSHA}`` userPassword value, as ``slappasswd`` would produce."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def generate_password(n: int = 18) -> str:
    return secrets.token_urlsafe(n)


@dataclass
class DemoUser:
    uid: str
    cn: str
    uid_number: int
    groups: list[str] = field(default_factory=list)
    mail: str = ""


#: the demo directory described in the README
DEMO_USERS = [
    DemoUser("alice", "Alice Martin", 20001, ["proj-cardio-los", "proj-air-quality"]),
    DemoUser("bob", "Bob Durand", 20002, ["proj-cardio-los"]),
    DemoUser("carol", "Carol Petit", 20003, ["ecluse-output-checkers"]),
    DemoUser("dan", "Dan Moreau", 20004, ["ecluse-output-checkers"]),
    DemoUser("erin", "Erin Lefèvre", 20005, ["ecluse-staff"]),
]
#: group name -> (kind, gidNumber)
DEMO_GROUPS = {
    "proj-cardio-los": ("groupOfNames", 30001),
    "proj-air-quality": ("groupOfNames", 30002),
    "ecluse-output-checkers": ("groupOfUniqueNames", 30100),
    "ecluse-staff": ("posixGroup", 30101),
}
USERS_GID = 20000


class SlapdError(RuntimeError):
    pass


def find_slapd() -> str:
    for c in SLAPD_CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    found = shutil.which("slapd")
    if found:
        return found
    raise SlapdError("slapd not found: install it with `apt-get install slapd ldap-utils`")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedSlapd:
    """A slapd of our own on loopback.

    ``workdir`` holds ``slapd.conf``, the database, the pid file and the
    admin password (mode 0600). ``start()`` is idempotent with respect to the
    data: a second start reuses the database.
    """

    def __init__(
        self,
        workdir: Path,
        base_dn: str = "dc=ecluse,dc=test",
        host: str = "127.0.0.1",
        port: int | None = None,
        service_dn: str | None = None,
    ):
        self.workdir = Path(workdir)
        self.base_dn = base_dn
        self.host = host
        self.port = port or free_port(host)
        self.admin_dn = f"cn=admin,{base_dn}"
        self.service_dn = service_dn or f"cn=ecluse-service,ou=services,{base_dn}"
        self.proc: subprocess.Popen | None = None
        #: run in the child before slapd (ecluse up: die with it, supervisor.die_with_parent)
        self.preexec_fn = None

    # ------------------------------------------------------------ secrets

    def _secret(self, name: str) -> str:
        path = self.workdir / f"{name}.secret"
        if path.exists():
            return path.read_text().strip()
        value = generate_password()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        return value

    @property
    def admin_password(self) -> str:
        return self._secret("admin-password")

    @property
    def service_password(self) -> str:
        return self._secret("service-password")

    @property
    def uri(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    # ------------------------------------------------------------ process

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.workdir, 0o700)
        (self.workdir / "db").mkdir(exist_ok=True, mode=0o700)
        moduledir = next((d for d in MODULE_DIRS if Path(d, "back_mdb.so").exists()), None)
        module_lines = f"modulepath {moduledir}\nmoduleload back_mdb\n" if moduledir else ""
        includes = "\n".join(f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS)
        conf = f"""# generated by ecluse.dev.ldapserver — do not edit
{includes}
pidfile {self.workdir}/slapd.pid
argsfile {self.workdir}/slapd.args
{module_lines}
database mdb
maxsize 104857600
suffix "{self.base_dn}"
rootdn "{self.admin_dn}"
rootpw {ssha(self.admin_password)}
directory {self.workdir}/db
index objectClass eq
index uid,cn,member,uniqueMember,memberUid eq
access to attrs=userPassword
    by self =xw
    by anonymous auth
    by * none
access to *
    by dn.exact="{self.service_dn}" read
    by self read
    by * none
"""
        path = self.workdir / "slapd.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(conf)
        return path

    def start(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            return
        conf = self.write_config()
        self._kill_stale()
        logfile = open(self.workdir / "slapd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [find_slapd(), "-f", str(conf), "-h", f"{self.uri}/", "-d", "0"],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=self.preexec_fn,
        )
        logfile.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.workdir / "slapd.log").read_text(errors="replace")[-2000:]
                raise SlapdError(f"slapd exited with status {self.proc.returncode}:\n{tail}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise SlapdError(f"slapd did not listen on {self.uri} within {timeout}s")
        self.seed_base()

    def _kill_stale(self) -> None:
        """Stop a slapd left running from an earlier run on the same workdir."""
        pidfile = self.workdir / "slapd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"slapd" in cmdline and str(self.workdir).encode() in cmdline:
            log.warning("stopping stale slapd (pid %s) on %s", pid, self.workdir)
            os.kill(pid, signal.SIGKILL)
            for _ in range(50):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)

    def stop(self) -> None:
        if not self.proc:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # a paused slapd cannot exit
            except ProcessLookupError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers."""
        assert self.proc
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc
        os.kill(self.proc.pid, signal.SIGCONT)

    # ------------------------------------------------------------ content

    def admin_connection(self) -> ldap3.Connection:
        server = ldap3.Server(self.host, port=self.port, connect_timeout=5)
        return ldap3.Connection(
            server, self.admin_dn, self.admin_password, auto_bind=True, receive_timeout=10,
            raise_exceptions=True,
        )

    def _add(self, conn: ldap3.Connection, dn: str, classes: list[str], attrs: dict) -> bool:
        try:
            conn.add(dn, classes, attrs)
            return True
        except LDAPEntryAlreadyExistsResult:
            return False

    def seed_base(self) -> None:
        """The suffix, the three OUs and the service account (idempotent)."""
        dc = self.base_dn.split(",")[0].split("=")[1]
        with self.admin_connection() as conn:
            self._add(conn, self.base_dn, ["dcObject", "organization"], {"dc": dc, "o": dc})
            for ou in ("people", "groups", "services"):
                self._add(conn, f"ou={ou},{self.base_dn}", ["organizationalUnit"], {"ou": ou})
            self._add(
                conn,
                self.service_dn,
                ["organizationalRole", "simpleSecurityObject"],
                {"cn": "ecluse-service", "userPassword": ssha(self.service_password)},
            )
            # keep the service password in step with the secret file
            conn.modify(
                self.service_dn,
                {"userPassword": [(ldap3.MODIFY_REPLACE, [ssha(self.service_password)])]},
            )

    def add_user(
        self, uid: str, password: str, uid_number: int, cn: str | None = None,
        gid_number: int = USERS_GID, mail: str | None = None,
    ) -> str:
        dn = f"uid={uid},ou=people,{self.base_dn}"
        cn = cn or uid
        with self.admin_connection() as conn:
            self._add(
                conn,
                dn,
                ["inetOrgPerson", "posixAccount"],
                {
                    "uid": uid,
                    "cn": cn,
                    "sn": cn.split()[-1],
                    "mail": mail or f"{uid}@ecluse.test",
                    "uidNumber": uid_number,
                    "gidNumber": gid_number,
                    "homeDirectory": f"/home/{uid}",
                    "userPassword": ssha(password),
                },
            )
        return dn

    def set_password(self, uid: str, password: str) -> None:
        with self.admin_connection() as conn:
            conn.modify(
                f"uid={uid},ou=people,{self.base_dn}",
                {"userPassword": [(ldap3.MODIFY_REPLACE, [ssha(password)])]},
            )

    def add_group(self, name: str, kind: str, gid_number: int, members: list[str]) -> str:
        dn = f"cn={name},ou=groups,{self.base_dn}"
        attrs: dict = {"cn": name, "gidNumber": gid_number}
        if kind == "groupOfNames":
            classes = ["groupOfNames", "extensibleObject"]
            # groupOfNames requires at least one member: the service account stands in
            attrs["member"] = [self.user_dn(m) for m in members] or [self.service_dn]
        elif kind == "groupOfUniqueNames":
            classes = ["groupOfUniqueNames", "extensibleObject"]
            attrs["uniqueMember"] = [self.user_dn(m) for m in members] or [self.service_dn]
        elif kind == "posixGroup":
            classes = ["posixGroup"]
            if members:
                attrs["memberUid"] = members
        else:
            raise ValueError(f"unknown group kind {kind!r}")
        with self.admin_connection() as conn:
            self._add(conn, dn, classes, attrs)
        return dn

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.base_dn}"

    def _group_attr(self, conn: ldap3.Connection, name: str) -> tuple[str, str]:
        dn = f"cn={name},ou=groups,{self.base_dn}"
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["objectClass"])
        classes = {c.lower() for c in conn.entries[0].objectClass.values}
        if "groupofnames" in classes:
            return dn, "member"
        if "groupofuniquenames" in classes:
            return dn, "uniqueMember"
        return dn, "memberUid"

    def add_member(self, group: str, uid: str) -> None:
        with self.admin_connection() as conn:
            dn, attr = self._group_attr(conn, group)
            value = uid if attr == "memberUid" else self.user_dn(uid)
            conn.modify(dn, {attr: [(ldap3.MODIFY_ADD, [value])]})

    def remove_member(self, group: str, uid: str) -> None:
        with self.admin_connection() as conn:
            dn, attr = self._group_attr(conn, group)
            value = uid if attr == "memberUid" else self.user_dn(uid)
            if attr != "memberUid":
                # groupOfNames needs a member: keep the service account as a placeholder
                conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[attr])
                if self.service_dn not in conn.entries[0][attr].values:
                    conn.modify(dn, {attr: [(ldap3.MODIFY_ADD, [self.service_dn])]})
            conn.modify(dn, {attr: [(ldap3.MODIFY_DELETE, [value])]})

    def seed_demo(self, passwords_file: Path) -> dict[str, dict[str, str]] | None:
        """Create the demo users and groups once.

        Writes ``{"alice": {"password": …, "totp": <base32 secret>}, …}`` to
        ``passwords_file`` (0600) and returns it the first time (to print
        once), or None when the directory was already seeded. (The stack
        enrols the secrets in the hub's second-factor store.)
        """
        if passwords_file.exists():
            return None

        users = {u.uid: {"password": generate_password(12), "totp": new_secret()}
                 for u in DEMO_USERS}
        passwords = {uid: v["password"] for uid, v in users.items()}
        for u in DEMO_USERS:
            self.add_user(u.uid, passwords[u.uid], u.uid_number, cn=u.cn)
            self.set_password(u.uid, passwords[u.uid])
        for name, (kind, gid) in DEMO_GROUPS.items():
            members = [u.uid for u in DEMO_USERS if name in u.groups]
            self.add_group(name, kind, gid, members)
        passwords_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(passwords_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(users, fh, indent=2)
        return users

    def __enter__(self) -> EmbeddedSlapd:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["EmbeddedSlapd", "SlapdError", "DEMO_USERS", "DEMO_GROUPS", "LDAPException"]
