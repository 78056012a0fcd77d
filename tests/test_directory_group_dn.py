"""Project groups by DN; a bare name only when unique under the group search base (slapd)."""

from __future__ import annotations

import pytest
import yaml
from traitlets.config import Config

from ecluse.cli import main
from ecluse.config import ConfigError, load_settings
from ecluse.directory import Directory, MembershipResolver, NotAMember, check_group_names
from ecluse.hub.hubconfig import configure


@pytest.fixture
def twin_groups(slapd):
    """Two groups named ``proj-twin``: one in ou=groups, one in ou=lab,ou=groups;
    alice is a member of the lab one only."""
    base = f"ou=groups,{slapd.base_dn}"
    lab = f"ou=lab,{base}"
    dns = [f"cn=proj-twin,{base}", f"cn=proj-twin,{lab}"]
    with slapd.admin_connection() as conn:
        conn.add(lab, ["organizationalUnit"], {"ou": "lab"})
        conn.add(dns[0], ["groupOfNames", "extensibleObject"],
                 {"cn": "proj-twin", "gidNumber": 30201, "member": [slapd.user_dn("bob")]})
        conn.add(dns[1], ["groupOfNames", "extensibleObject"],
                 {"cn": "proj-twin", "gidNumber": 30202, "member": [slapd.user_dn("alice")]})
    try:
        yield dns
    finally:
        with slapd.admin_connection() as conn:
            for dn in [*dns, lab]:
                conn.delete(dn)


def _config(make_config, ldap_group: str):
    path = make_config()
    projects_file = path.parent / "projects.yaml"
    projects = yaml.safe_load(projects_file.read_text())
    projects["projects"]["air-quality"]["ldap_group"] = ldap_group
    projects_file.write_text(yaml.safe_dump(projects))
    return path


def test_an_ambiguous_bare_name_stops_the_start(make_config, twin_groups, capsys):
    path = _config(make_config, "proj-twin")
    settings = load_settings(path)
    with pytest.raises(ConfigError) as e:
        check_group_names(settings)
    assert "projects.air-quality.ldap_group: 2 groups are named 'proj-twin'" in str(e.value)
    assert all(dn in str(e.value) for dn in twin_groups)
    with pytest.raises(ConfigError, match="name the group by its DN"):
        configure(Config(), settings)  # the hub does not start
    assert main(["config", "check", "--config", str(path)]) == 1
    assert "2 groups are named 'proj-twin'" in capsys.readouterr().out


def test_a_group_by_dn_is_that_group(make_config, twin_groups):
    # the lab group, written with other case and spaces: alice is in it, bob is not
    lab = twin_groups[1].upper().replace(",", ", ")
    settings = load_settings(_config(make_config, lab))
    assert check_group_names(settings)  # the other (bare) names are reported, no error
    resolver = MembershipResolver(settings)
    m = resolver.require("alice", "air-quality")
    assert m.project_gid == 30202
    with pytest.raises(NotAMember):
        resolver.require("bob", "air-quality")  # a member of the *other* proj-twin
    assert Directory(settings.ldap).group_members(lab) == ["alice"]


def test_config_check_says_what_to_write(make_config, capsys):
    path = make_config()  # bare names, each unique
    assert main(["config", "check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    settings = load_settings(path)
    base = settings.ldap.group_search_base
    assert (f"# projects.cardio-los.ldap_group: 'proj-cardio-los' is a bare name; it is "
            f"'cn=proj-cardio-los,{base}' (unique under {base}): write the DN") in out


def test_an_ambiguous_data_owner_group_stops_the_start_too(make_config, twin_groups):
    """``data_owner_group`` (import approvals) is held to the rule of ``ldap_group``."""
    path = make_config()
    projects_file = path.parent / "projects.yaml"
    projects = yaml.safe_load(projects_file.read_text())
    projects["projects"]["air-quality"]["data_owner_group"] = "proj-twin"
    projects_file.write_text(yaml.safe_dump(projects))
    with pytest.raises(ConfigError, match="projects.air-quality.data_owner_group: 2 groups"):
        check_group_names(load_settings(path))
    projects["projects"]["air-quality"]["data_owner_group"] = "cn=bad,,dc="
    projects_file.write_text(yaml.safe_dump(projects))
    with pytest.raises(ConfigError, match="is not a valid DN"):
        load_settings(path)
