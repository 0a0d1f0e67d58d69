"""The plugin registry: every installed policy listed; registration by entry-point name only;
disabled plugins refused in experiments."""
from __future__ import annotations

import os
import sys

import pytest

from .helpers import error_fields, experiment

BUILT_IN = {"static", "overcommit", "esx", "dynamic-memory", "smart-paging", "kvm"}


def test_every_installed_policy_is_listed(api):
    pytest.importorskip("vmemlab_example_policy", reason="make setup installs examples/third-party-policy")
    plugins = {p["name"]: p for p in api.get("/api/v1/plugins").get_json()}
    assert BUILT_IN | {"fair-balloon"} <= set(plugins)
    esx = plugins["esx"]
    assert esx["distribution"] == "vmemlab" and esx["enabled"] and esx["installed"] and esx["version"]
    assert esx["parameters"]["idle_tax_pct"]["default"] == 75.0
    fair = plugins["fair-balloon"]
    assert fair["distribution"] == "vmemlab-example-policy" and fair["entry_point"].startswith("vmemlab_example_policy")
    assert api.get("/api/v1/plugins/kvm").get_json()["name"] == "kvm"
    assert api.get("/api/v1/plugins/nope").status_code == 404
    assert {p["name"] for p in api.get("/api/v1/plugins?enabled=false").get_json()} == set()


def test_register_an_installed_entry_point_by_name(api):
    pytest.importorskip("vmemlab_example_policy", reason="make setup installs examples/third-party-policy")
    first = api.post("/api/v1/plugins", {"name": "fair-balloon"})
    assert first.status_code == 201 and first.get_json()["enabled"]
    assert first.headers["Location"].endswith("/api/v1/plugins/fair-balloon")
    again = api.post("/api/v1/plugins", {"name": "fair-balloon", "enabled": False})
    assert again.status_code == 200 and not again.get_json()["enabled"]


@pytest.mark.parametrize("name", ["os:system", "service.cli:main", "tests.api.evil_plugin:boom",
                                  "tests.api.evil_plugin", "../../etc/passwd", "no-such-policy", ""])
def test_anything_but_an_installed_name_is_refused_and_nothing_is_imported(api, counts, name):
    before = counts()
    response = api.post("/api/v1/plugins", {"name": name})
    assert response.status_code == 422
    assert "vmemlab.policies" in " ".join(error_fields(response)["name"])
    assert "tests.api.evil_plugin" not in sys.modules and "VMEMLAB_TEST_EVIL_IMPORTED" not in os.environ
    assert counts() == before


def test_bad_registration_bodies(api):
    assert "enabled" in error_fields(api.post("/api/v1/plugins", {"name": "esx", "enabled": "yes please"}))
    assert "entry_point" in error_fields(api.post("/api/v1/plugins", {"name": "esx", "entry_point": "os:system"}))
    assert "name" in error_fields(api.post("/api/v1/plugins", {}))
    assert "enabled" in error_fields(api.patch("/api/v1/plugins/esx", {}))
    assert api.patch("/api/v1/plugins/nope", {"enabled": False}).status_code == 404


def test_a_disabled_plugin_is_refused_in_experiments(api, counts):
    disabled = api.patch("/api/v1/plugins/esx", {"enabled": False})
    assert disabled.status_code == 200 and not disabled.get_json()["enabled"]
    assert [p["name"] for p in api.get("/api/v1/plugins?enabled=false").get_json()] == ["esx"]
    before = counts()
    refused = api.post("/api/v1/experiments", experiment(policies=("static", "esx")))
    assert refused.status_code == 422
    assert "disabled" in error_fields(refused)["policies[1].name"][0]
    assert counts() == before

    assert api.patch("/api/v1/plugins/esx", {"enabled": True}).get_json()["enabled"]
    assert api.post("/api/v1/experiments", experiment(policies=("static", "esx"))).status_code == 201
