# The hub configuration of tests.support.hubstack.HubStack(users=...): every deployment's
# (the file `ecluse up` runs calls the same function), then the test's own two changes:
# who signs in (hub groups from the test, as the LDAP authenticator sets them from the
# directory) and a `test-admin` service that mints API tokens through the REST API.
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # doubles.py

from ecluse.hub.hubconfig import configure_from_env  # noqa: E402

c = get_config()  # noqa: F821 - provided by JupyterHub
configure_from_env(c)  # what every deployment's hub runs

with open(os.environ["ECLUSE_TEST_HUB_USERS"]) as f:
    test = json.load(f)
c.JupyterHub.authenticator_class = "doubles.GroupsFromConfigAuthenticator"
c.Authenticator.manage_groups = True
c.Authenticator.allow_all = True
c.GroupsFromConfigAuthenticator.passwords = test["passwords"]
c.GroupsFromConfigAuthenticator.user_groups = test["groups"]
c.JupyterHub.services.append({"name": "test-admin", "api_token": test["admin_token"]})
c.JupyterHub.load_roles.append(
    {"name": "test-admin", "scopes": ["admin:users", "tokens", "list:users"],
     "services": ["test-admin"]})
