"""The plugin registry through HTTP with a real admin token: every installed policy listed with a
status (enabled, available, disabled, version_changed, broken, missing); registration by
entry-point name only, approving the installed version; only enabled plugins in experiments; a
plugin's constructor failing is the request's 422, naming it."""
from __future__ import annotations

import os
import sys

import pytest

from service import policies

from .helpers import error_fields, experiment

BUILT_IN = {"static", "overcommit", "esx", "dynamic-memory", "smart-paging", "kvm"}


def listed(api, query: str = "") -> dict[str, dict]:
    return {p["name"]: p for p in api.get(f"/api/v1/plugins{query}").get_json()}


def test_every_installed_policy_is_listed_with_its_status(api):
    pytest.importorskip("vmemlab_example_policy", reason="make setup installs examples/third-party-policy")
    plugins = listed(api)
    assert BUILT_IN | {"fair-balloon"} <= set(plugins)
    esx = plugins["esx"]
    assert esx["distribution"] == "vmemlab" and esx["installed"] and esx["version"] and esx["builtin"]
    assert (esx["status"], esx["enabled"], esx["approved_version"], esx["reason"]) == ("enabled", True, esx["version"], "")
    assert esx["parameters"]["idle_tax_pct"]["default"] == 75.0
    fair = plugins["fair-balloon"]
    assert fair["distribution"] == "vmemlab-example-policy" and fair["entry_point"].startswith("vmemlab_example_policy")
    # a third-party policy is only available until an admin registers it
    assert (fair["status"], fair["enabled"], fair["approved_version"], fair["builtin"]) == ("available", False, None, False)
    assert "POST /api/v1/plugins" in fair["reason"]
    assert api.get("/api/v1/plugins/kvm").get_json()["name"] == "kvm"
    assert api.get("/api/v1/plugins/nope").status_code == 404
    assert set(listed(api, "?status=available")) == {"fair-balloon"}
    assert set(listed(api, "?enabled=false")) == {"fair-balloon"}
    assert "status" in error_fields(api.get("/api/v1/plugins?status=happy"), "query")


def test_registering_approves_the_installed_version(api, counts):
    pytest.importorskip("vmemlab_example_policy", reason="make setup installs examples/third-party-policy")
    refused = api.post("/api/v1/experiments", experiment(policies=("static", "fair-balloon")))
    assert refused.status_code == 422
    assert "not registered" in error_fields(refused)["policies[1].name"][0]

    first = api.post("/api/v1/plugins", {"name": "fair-balloon"})
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["status"] == "enabled" and first.get_json()["approved_version"] == "0.1.0"
    assert first.headers["Location"].endswith("/api/v1/plugins/fair-balloon")
    assert api.post("/api/v1/plugins", {"name": "fair-balloon"}).status_code == 200       # known
    assert api.post("/api/v1/experiments", experiment(policies=("static", "fair-balloon"))).status_code == 201

    again = api.post("/api/v1/plugins", {"name": "fair-balloon", "enabled": False})
    assert again.status_code == 200 and again.get_json()["status"] == "disabled"


def test_a_new_version_needs_approving_again(api, monkeypatch):
    pytest.importorskip("vmemlab_example_policy", reason="make setup installs examples/third-party-policy")
    assert api.post("/api/v1/plugins", {"name": "fair-balloon"}).status_code == 201
    fair = policies.load_policy("fair-balloon")
    monkeypatch.setattr(fair, "version", "0.2.0")          # the distribution upgraded in place
    shown = api.get("/api/v1/plugins/fair-balloon").get_json()
    assert (shown["status"], shown["version"], shown["approved_version"]) == ("version_changed", "0.2.0", "0.1.0")
    assert "0.2.0" in shown["reason"] and not shown["enabled"]
    refused = api.post("/api/v1/experiments", experiment(policies=("fair-balloon",)))
    assert "version 0.1.0 was approved" in error_fields(refused)["policies[0].name"][0]
    approved = api.post("/api/v1/plugins", {"name": "fair-balloon"})
    assert approved.status_code == 201 and approved.get_json()["status"] == "enabled"
    assert api.post("/api/v1/experiments", experiment(policies=("fair-balloon",))).status_code == 201
    # runs are traced to the version that produced them
    runs = api.get("/api/v1/plugins/fair-balloon").get_json()["runs_by_version"]
    assert [(r["version"], r["runs"]) for r in runs] == [("0.2.0", 1)]


def test_a_built_in_update_is_approved_by_the_default_setting(api, monkeypatch):
    esx = policies.load_policy("esx")
    listed(api)
    monkeypatch.setattr(esx, "version", "9.9.9")
    assert listed(api)["esx"]["status"] == "enabled" and listed(api)["esx"]["approved_version"] == "9.9.9"


@pytest.mark.parametrize("setting,fair,esx", [("all", "enabled", "enabled"), ("none", "available", "available")])
def test_the_auto_enable_setting(make_app, setting, fair, esx):
    pytest.importorskip("vmemlab_example_policy", reason="make setup installs examples/third-party-policy")
    from .helpers import Api
    api = Api(make_app(plugins_auto_enable=setting).test_client())
    shown = listed(api)
    assert (shown["fair-balloon"]["status"], shown["esx"]["status"]) == (fair, esx)
    status = api.post("/api/v1/experiments", experiment(policies=("esx",))).status_code
    assert status == (201 if esx == "enabled" else 422)


def test_a_broken_plugin_is_listed_with_its_reason_and_cannot_be_registered(api, with_broken_plugin):
    shown = listed(api)["broken-one"]
    assert shown["status"] == "broken" and not shown["enabled"]
    assert "No module named 'no_such_module_xyz'" in shown["reason"] and "restart" in shown["reason"]
    item = api.get("/api/v1/plugins/broken-one")
    assert item.status_code == 200 and item.get_json()["status"] == "broken"
    refused = api.post("/api/v1/plugins", {"name": "broken-one"})
    assert refused.status_code == 422 and "does not load" in error_fields(refused)["name"][0]
    assert "no_such_module_xyz" in error_fields(refused)["name"][0]
    patched = api.patch("/api/v1/plugins/broken-one", {"enabled": True})
    assert patched.status_code == 422
    refused = api.post("/api/v1/experiments", experiment(policies=("broken-one",)))
    assert "failed to import" in error_fields(refused)["policies[0].name"][0]


@pytest.mark.parametrize("name", ["os:system", "service.cli:main", "tests.api.evil_plugin:boom", "my.policy",
                                  "tests.api.evil_plugin", "../../etc/passwd", "no-such-policy", ""])
def test_anything_but_an_installed_name_is_refused_and_nothing_is_imported(api, counts, name):
    before = counts()
    response = api.post("/api/v1/plugins", {"name": name})
    assert response.status_code == 422
    assert "vmemlab.policies" in " ".join(error_fields(response)["name"])
    assert "tests.api.evil_plugin" not in sys.modules and "VMEMLAB_TEST_EVIL_IMPORTED" not in os.environ
    assert counts() == before


def test_a_name_not_installed_says_what_to_do(api):
    message = error_fields(api.post("/api/v1/plugins", {"name": "late-one"}))["name"][0]
    assert "install its package first" in message and "restarted" in message


def test_bad_registration_bodies(api):
    assert "enabled" in error_fields(api.post("/api/v1/plugins", {"name": "esx", "enabled": "yes please"}))
    assert "entry_point" in error_fields(api.post("/api/v1/plugins", {"name": "esx", "entry_point": "os:system"}))
    assert "name" in error_fields(api.post("/api/v1/plugins", {}))
    assert "enabled" in error_fields(api.patch("/api/v1/plugins/esx", {}))
    assert api.patch("/api/v1/plugins/nope", {"enabled": False}).status_code == 404


def test_a_disabled_plugin_is_refused_in_experiments(api, counts):
    disabled = api.patch("/api/v1/plugins/esx", {"enabled": False})
    assert disabled.status_code == 200 and disabled.get_json()["status"] == "disabled"
    assert "esx" in listed(api, "?status=disabled")
    before = counts()
    refused = api.post("/api/v1/experiments", experiment(policies=("static", "esx")))
    assert refused.status_code == 422
    assert "disabled" in error_fields(refused)["policies[1].name"][0]
    assert counts() == before

    assert api.patch("/api/v1/plugins/esx", {"enabled": True}).get_json()["enabled"]
    assert api.post("/api/v1/experiments", experiment(policies=("static", "esx"))).status_code == 201


@pytest.mark.parametrize("name,words", [
    ("hostile-ctor-raises", "plugin 'hostile-ctor-raises' 1.0 (vmemlab-hostile) cannot be created with these "
                            "parameters: ValueError: the constructor refuses (hostile test)"),
    ("hostile-ctor-hangs", "create() ran longer than the plugin hook time limit of 1 s"),
    ("hostile-ctor-trust", "its constructor changed trusts_guest"),
])
def test_a_plugin_constructor_that_fails_is_a_422_naming_it(make_app, hostile, counts, name, words):
    from .helpers import Api
    api = Api(make_app(plugin_time_limit_s=1.0).test_client())
    assert api.post("/api/v1/plugins", {"name": name}).status_code == 201
    before = counts()
    response = api.post("/api/v1/experiments", experiment(policies=("static", name)))
    assert response.status_code == 422, response.get_json()
    assert words in error_fields(response)["policies[1].name"][0]
    assert counts() == before
    assert policies.load_policy(name).trusts_guest is False
