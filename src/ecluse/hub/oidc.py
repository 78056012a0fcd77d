"""Sign-in through a hospital's OpenID Connect provider, groups still from LDAP.

Entry point ``jupyterhub.authenticators: ecluse-oidc`` (``hub.authenticator:
oidc`` in ``ecluse.yaml``). :class:`EcluseOIDCAuthenticator` is
oauthenticator's ``GenericOAuthenticator`` (authorization code flow with
PKCE) on top of :class:`ecluse.hub.auth.EcluseAuthenticator`:

* the provider asks the password and the second factor; the hub asks for
  ``oidc.required_acr`` (``acr_values``) and checks the ID token it gets
  back: signature against the provider's published keys, issuer, audience,
  expiry, and — when configured — an ``acr`` among ``oidc.required_acr`` and
  an ``amr`` method among ``oidc.required_amr``. A token without them is
  refused (403) and audited (``login.failure``, reason ``acr-not-satisfied``
  or ``amr-not-satisfied``);
* the user named by ``oidc.username_claim`` is then looked up in LDAP, and
  projects, roles, hub groups and auth_state come from the directory exactly
  as with the password sign-in; ``refresh_user`` re-reads LDAP.
"""

from __future__ import annotations

import os
from typing import Any

import jwt
import requests
from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import default

from ..auditevents import AuditEvent
from ..directory import DirectoryError, DirectoryUnavailable
from ..i18n import N_
from .auth import NO_PROJECT_MESSAGE, UNAVAILABLE_MESSAGE, EcluseAuthenticator
from .requester import server_api_handlers

#: the default of ``oidc.login_service`` (ecluse.config), in the catalogue: the sign-in
#: page's button says it in the page's language
DEFAULT_LOGIN_SERVICE = N_("your hospital account")

SECOND_FACTOR_MESSAGE = N_(
    "Your identity provider did not confirm a second factor for this sign-in. "
    "Sign in again with your second factor (card, code or key)."
)


class EcluseOIDCAuthenticator(GenericOAuthenticator, EcluseAuthenticator):
    """OpenID Connect sign-in; projects and roles from LDAP."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        oidc = self.settings.oidc
        if oidc is None:
            raise ValueError("hub.authenticator: oidc needs an oidc: section in ecluse.yaml")
        self.oidc = oidc
        verify: Any = str(oidc.ca_file) if oidc.ca_file else True
        r = requests.get(f"{oidc.issuer}/.well-known/openid-configuration", timeout=10,
                         verify=verify)
        r.raise_for_status()
        self.discovery = r.json()
        if self.discovery.get("issuer", "").rstrip("/") != oidc.issuer:
            raise ValueError(f"the provider at {oidc.issuer} names itself "
                             f"{self.discovery.get('issuer')!r}")
        self.jwks = jwt.PyJWKClient(self.discovery["jwks_uri"], cache_keys=True)
        if oidc.ca_file:
            import ssl

            self.jwks.ssl_context = ssl.create_default_context(cafile=str(oidc.ca_file))
        if not oidc.required_acr and not oidc.required_amr:
            self.log.warning("oidc: neither required_acr nor required_amr is set: the hub "
                             "does not check that the provider asked a second factor")

    # ------------------------------------------------------------ configuration

    @default("authorize_url")
    def _authorize_url(self) -> str:
        return self.discovery["authorization_endpoint"]

    @default("token_url")
    def _token_url(self) -> str:
        return self.discovery["token_endpoint"]

    @default("userdata_url")
    def _userdata_url(self) -> str:
        return ""  # claims come from the verified ID token (token_to_user)

    @default("client_id")
    def _client_id(self) -> str:
        return self.settings.oidc.client_id

    @default("client_secret")
    def _client_secret(self) -> str:
        oidc = self.settings.oidc
        if oidc.client_secret_file:
            return oidc.client_secret_file.read_text().strip()
        value = os.environ.get(oidc.client_secret_env or "", "")
        if not value:
            raise ValueError(f"oidc: no client secret (oidc.client_secret_file, or "
                             f"${oidc.client_secret_env})")
        return value

    @default("scope")
    def _scope(self) -> list[str]:
        return list(self.settings.oidc.scopes)

    @default("extra_authorize_params")
    def _extra_authorize_params(self) -> dict:
        acr = self.settings.oidc.required_acr
        return {"acr_values": " ".join(acr)} if acr else {}

    @default("http_request_kwargs")
    def _http_request_kwargs(self) -> dict:
        ca = self.settings.oidc.ca_file
        return {"ca_certs": str(ca)} if ca else {}

    @default("basic_auth")
    def _basic_auth(self) -> bool:
        # the OIDC default (client_secret_basic) unless the provider only takes the form
        methods = self.discovery.get("token_endpoint_auth_methods_supported",
                                     ["client_secret_basic"])
        return "client_secret_basic" in methods

    @default("enable_pkce")
    def _pkce(self) -> bool:
        return True

    @default("login_service")
    def _login_service(self) -> str:
        return self.settings.oidc.login_service

    @default("username_claim")
    def _username_claim(self) -> str:
        return self.settings.oidc.username_claim

    @default("allow_all")
    def _default_allow_all(self) -> bool:
        return True  # who may sign in is decided by LDAP groups (update_auth_model)

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True

    @default("request_otp")
    def _default_request_otp(self) -> bool:
        return False  # the provider asks the second factor

    def get_handlers(self, app: Any) -> list:
        return [*GenericOAuthenticator.get_handlers(self, app), *server_api_handlers()]

    # ------------------------------------------------------------ sign-in

    async def token_to_user(self, token_info: dict) -> dict:
        """The claims of the ID token, verified (signature, issuer, audience, expiry)."""
        id_token = token_info.get("id_token")
        if not id_token:
            raise web.HTTPError(403, N_("The identity provider returned no ID token."))
        try:
            key = self.jwks.get_signing_key_from_jwt(id_token)
            return jwt.decode(
                id_token, key.key,
                algorithms=self.discovery.get("id_token_signing_alg_values_supported",
                                              ["RS256"]),
                audience=self.client_id, issuer=self.oidc.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, jwt.PyJWKClientError) as e:
            self.log.warning("oidc: ID token refused: %s", e)
            self._record(AuditEvent.LOGIN_FAILURE, None, "failure", reason="bad-id-token", detail=str(e))
            raise web.HTTPError(403, N_("The identity provider's answer could not be "
                                        "verified.")) from None

    def user_info_to_username(self, user_info: dict) -> str:
        try:
            return super().user_info_to_username(user_info)
        except ValueError:
            self._record(AuditEvent.LOGIN_FAILURE, None, "failure", reason="no-username-claim",
                         claim=self.oidc.username_claim)
            raise web.HTTPError(403, f"The identity provider did not give your user name "
                                     f"({self.oidc.username_claim}).") from None

    def second_factor_refusal(self, claims: dict) -> str | None:
        """Why the ID token does not show the required second factor (None: it does)."""
        oidc = self.oidc
        if oidc.required_acr and claims.get("acr") not in oidc.required_acr:
            return "acr-not-satisfied"
        amr = claims.get("amr") or []
        if isinstance(amr, str):
            amr = [amr]
        if oidc.required_amr and not set(amr) & set(oidc.required_amr):
            return "amr-not-satisfied"
        return None

    async def update_auth_model(self, auth_model: dict) -> dict:
        """The provider's second factor checked; projects, roles and auth_state from LDAP."""
        username = auth_model["name"]
        claims = (auth_model.get("auth_state") or {}).get(self.user_auth_state_key) or {}
        refusal = self.second_factor_refusal(claims)
        if refusal:
            self.log.warning("oidc: sign-in of %s refused: %s (acr=%r, amr=%r)", username,
                             refusal, claims.get("acr"), claims.get("amr"))
            self._record(AuditEvent.LOGIN_FAILURE, username, "failure", reason=refusal,
                         acr=claims.get("acr"), amr=claims.get("amr"))
            raise web.HTTPError(403, SECOND_FACTOR_MESSAGE)
        try:
            user = await self._call(self.directory.lookup, username)
        except DirectoryUnavailable as e:
            self._record(AuditEvent.LOGIN_FAILURE, username, "failure", reason=e.reason, detail=str(e))
            raise web.HTTPError(503, UNAVAILABLE_MESSAGE) from None
        except DirectoryError as e:
            self._record(AuditEvent.LOGIN_FAILURE, username, "failure", reason=e.reason)
            raise web.HTTPError(403, NO_PROJECT_MESSAGE) from None
        model = self._auth_model(user)
        if model is None:
            self._record(AuditEvent.LOGIN_FAILURE, username, "failure", reason="no-project")
            raise web.HTTPError(403, NO_PROJECT_MESSAGE)
        model["auth_state"]["oidc"] = {k: claims.get(k) for k in ("iss", "sub", "acr", "amr")}
        model["admin"] = auth_model.get("admin")
        self._record(AuditEvent.LOGIN_SUCCESS, model["name"], "success", groups=model["groups"],
                     uid_number=user.uid_number, factor="oidc", acr=claims.get("acr"),
                     amr=claims.get("amr"))
        return model

    async def get_user_groups(self, auth_state: dict) -> set:
        return set(auth_state.get("projects", [])) | set(auth_state.get("roles", []))

    async def refresh_user(self, user, handler=None):
        # groups follow LDAP, as with the password sign-in (not the provider's tokens)
        return await EcluseAuthenticator.refresh_user(self, user, handler)
