"""A real OpenID Connect provider on loopback, for the hub's OIDC sign-in tests.

Built on ``pyop`` (IdentityPython's OpenID Provider library, PyPI): discovery,
JWKS, authorization (code flow, PKCE), token and userinfo endpoints, RS256
ID tokens signed with a key generated per run. It stands for a hospital's
identity provider: its sign-in page asks the user name, the password and,
optionally, the provider's own TOTP code. A sign-in with the code gets
``acr = MFA_ACR`` and ``amr = ["pwd", "otp"]``; without it
``acr = SFA_ACR`` and ``amr = ["pwd"]`` — the claims the hub checks.

Served over HTTPS (an OpenID issuer must be https; a certificate for
127.0.0.1 made per run, :attr:`ca_file` for the clients) by ``http.server``
in a thread of the test process; :meth:`stop` closes it.
"""

from __future__ import annotations

import html
import json
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pyotp

MFA_ACR = "https://refeds.org/profile/mfa"
SFA_ACR = "https://refeds.org/profile/sfa"


def self_signed_certificate(directory: Path) -> Path:
    """A certificate for 127.0.0.1 (and its key, idp.key, 0600) in ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecluse test IdP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "idp.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path = directory / "idp.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


class OpenIDProvider:
    def __init__(self, users: dict[str, str], client_id: str, client_secret: str,
                 redirect_uri: str, tls_dir: Path) -> None:
        from Cryptodome.PublicKey import RSA
        from jwkest.jwk import RSAKey
        from pyop.authz_state import AuthorizationState
        from pyop.provider import Provider
        from pyop.subject_identifier import HashBasedSubjectIdentifierFactory
        from pyop.userinfo import Userinfo

        self.users = users
        #: what the provider refused (to explain a failing test)
        self.errors: list[str] = []
        #: sign the next ID token with a key that is not the published one
        self.forge_next = False
        #: authorization code -> what the sign-in established (acr, amr, name)
        self.claims_of_code: dict[str, dict] = {}
        self.totp = {name: pyotp.random_base32() for name in users}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.ca_file = self_signed_certificate(tls_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca_file, tls_dir / "idp.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.issuer = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_uri = redirect_uri
        key = RSAKey(key=RSA.generate(2048), alg="RS256", kid=secrets.token_hex(4))
        config = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "scopes_supported": ["openid", "profile"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post"],
            "acr_values_supported": [MFA_ACR, SFA_ACR],
            "claims_supported": ["sub", "preferred_username", "acr", "amr"],
        }
        clients = {client_id: {
            "client_secret": client_secret, "redirect_uris": [redirect_uri],
            "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic",
        }}
        self.userinfo = {name: {"sub": name, "preferred_username": name} for name in users}
        self.provider = Provider(
            key, config, AuthorizationState(HashBasedSubjectIdentifierFactory("ecluse-test")),
            clients, Userinfo(self.userinfo))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def __enter__(self) -> OpenIDProvider:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def code(self, user: str) -> str:
        return pyotp.TOTP(self.totp[user]).now()

    # ------------------------------------------------------------ HTTP

    def _handler(self) -> type:
        from Cryptodome.PublicKey import RSA
        from jwkest.jwk import RSAKey

        op = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: str | bytes, ctype: str = "application/json",
                      headers: dict[str, str] | None = None) -> None:
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/.well-known/openid-configuration":
                    self._send(200, op.provider.provider_configuration.to_json())
                elif path == "/jwks":
                    self._send(200, json.dumps(op.provider.jwks))
                elif path == "/authorize":
                    try:
                        op.provider.parse_authentication_request(query)
                    except Exception as e:  # an invalid request: say so, as a provider does
                        self._send(400, f"invalid authentication request: {e}", "text/plain")
                        return
                    self._send(200, op.login_page(query), "text/html")
                elif path == "/userinfo":
                    try:
                        r = op.provider.handle_userinfo_request(query, dict(self.headers))
                        self._send(200, r.to_json())
                    except Exception as e:
                        self._send(401, json.dumps({"error": str(e)}))
                else:
                    self._send(404, "not found", "text/plain")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.path == "/token":
                    try:
                        code = parse_qs(body).get("code", [""])[0]
                        genuine = op.provider.signing_key
                        if op.forge_next:  # same kid, another key: what a forger can do
                            op.forge_next = False
                            op.provider.signing_key = RSAKey(
                                key=RSA.generate(2048), alg="RS256", kid=genuine.kid)
                        try:
                            r = op.provider.handle_token_request(
                                body, dict(self.headers),
                                extra_id_token_claims=op.claims_of_code.pop(code, {}))
                        finally:
                            op.provider.signing_key = genuine
                        self._send(200, r.to_json())
                    except Exception as e:
                        op.errors.append(f"token: {type(e).__name__}: {e}")
                        self._send(400, json.dumps({"error": "invalid_request",
                                                    "error_description": str(e)}))
                elif self.path == "/authorize":
                    status, location = op.sign_in(parse_qs(body))
                    if location:
                        self._send(302, "", "text/plain", {"Location": location})
                    else:
                        self._send(status, "sign-in refused", "text/plain")
                else:
                    self._send(404, "not found", "text/plain")

        return Handler

    def login_page(self, query: str) -> str:
        return (
            "<html><body><h1>Hospital sign-in</h1>"
            f'<form method="post" action="{self.issuer}/authorize">'
            f'<input type="hidden" name="request" value="{html.escape(query)}">'
            '<input name="username"><input name="password" type="password">'
            '<input name="otp"><input type="submit" value="Sign in"></form></body></html>'
        )

    def sign_in(self, form: dict[str, list[str]]) -> tuple[int, str | None]:
        """The provider's own check; returns (status, redirect to the client)."""
        query = form.get("request", [""])[0]
        user = form.get("username", [""])[0]
        password = form.get("password", [""])[0]
        otp = form.get("otp", [""])[0]
        if not secrets.compare_digest(self.users.get(user, "\0"), password):
            return 403, None
        auth_req = self.provider.parse_authentication_request(query)
        mfa = bool(otp) and pyotp.TOTP(self.totp[user]).verify(otp, valid_window=1)
        if otp and not mfa:
            return 403, None
        claims = {"acr": MFA_ACR if mfa else SFA_ACR,
                  "amr": ["pwd", "otp"] if mfa else ["pwd"],
                  "preferred_username": user, "auth_time": int(time.time())}
        response = self.provider.authorize(auth_req, user)
        self.claims_of_code[response["code"]] = claims
        return 302, f"{auth_req['redirect_uri']}?{urlencode(dict(response.items()))}"
