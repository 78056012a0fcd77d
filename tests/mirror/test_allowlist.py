"""Allow-lists, tokens and closures (``ecluse.mirror.allowlist``) against a local index."""

from __future__ import annotations

import pytest

from ecluse.mirror.allowlist import (
    AllowList,
    AllowListError,
    ResolveError,
    allow,
    mirror_key,
    parse_requirement,
    project_token,
    token_project,
)


def test_a_token_names_its_project_and_no_other(tmp_path):
    key = mirror_key(tmp_path)
    a = project_token(key, "cardio-los")
    assert token_project(key, a) == "cardio-los"
    # a workspace of cardio-los holding its token cannot make air-quality's
    project, _, mac = a.rpartition(".")
    assert token_project(key, f"air-quality.{mac}") is None
    assert token_project(key, "air-quality") is None
    assert token_project(key, a[:-1] + ("0" if a[-1] != "0" else "1")) is None
    # another deployment's key makes other tokens
    assert token_project(bytes(32), a) is None
    assert oct((tmp_path / "key").stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.parametrize("text", ["alpha>=1", "alpha; os_name=='nt'", "../etc", "", "a b",
                                  "alpha==1.0 beta"])
def test_only_a_name_or_an_exact_pin_is_accepted(text):
    with pytest.raises(AllowListError):
        parse_requirement(text)


def test_names_are_normalised():
    assert parse_requirement("Foo_Bar.baz==2.0") == ("foo-bar-baz", "2.0")


def test_allow_pins_the_closure_and_revoke_removes_it(tmp_path, upstream):
    data = tmp_path / "mirror"
    done = allow(data, "cardio-los", "alpha", upstream=upstream.url, actor="cli:staff")
    assert done.closure == {"alpha": "1.0", "beta": "1.0"}
    lst = AllowList(data, "cardio-los")
    assert lst.pins() == {"alpha": {"1.0"}, "beta": {"1.0"}}
    assert AllowList(data, "air-quality").pins() == {}
    # a newer dependency upstream changes nothing already pinned
    upstream.add("beta", "2.0")
    assert lst.pins()["beta"] == {"1.0"}
    # resolving never asked the upstream about anything outside the closure
    assert not upstream.asked_about("secretpkg")
    assert not upstream.asked_about("gamma")
    lst.revoke("alpha")
    assert lst.pins() == {}
    with pytest.raises(AllowListError, match="not on project cardio-los's allow-list"):
        lst.revoke("beta")


def test_an_unknown_package_is_refused_with_pips_reason(tmp_path, upstream):
    with pytest.raises(ResolveError, match="cannot resolve nosuchpkg"):
        allow(tmp_path, "cardio-los", "nosuchpkg", upstream=upstream.url, actor="cli:staff")
    assert AllowList(tmp_path, "cardio-los").pins() == {}


def test_an_exact_version_is_pinned(tmp_path, upstream):
    upstream.add("gamma", "2.0")
    done = allow(tmp_path, "cardio-los", "gamma==1.0", upstream=upstream.url, actor="x")
    assert done.closure == {"gamma": "1.0"}
    done = allow(tmp_path, "air-quality", "gamma", upstream=upstream.url, actor="x")
    assert done.closure == {"gamma": "2.0"}
