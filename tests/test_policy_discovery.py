"""Discovery survives a broken third-party package: it is reported, the others still list."""
from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from service import policies
from service.cli import main


@pytest.fixture
def with_broken_plugin(monkeypatch):
    real = policies._entry_points

    def entry_points():
        eps = dict(real())
        eps["broken-one"] = EntryPoint(name="broken-one", value="no_such_module_xyz:Policy", group=policies.GROUP)
        return eps

    monkeypatch.setattr(policies, "_entry_points", entry_points)


def test_a_broken_plugin_is_reported_not_fatal(with_broken_plugin, capsys):
    names = [p.name for p in policies.installed_policies()]
    assert "static" in names and "broken-one" not in names
    broken = policies.broken_policies()
    assert [b.name for b in broken] == ["broken-one"]
    assert "failed to import" in broken[0].error
    assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert "static 1.0.0" in out and "broken-one" in err and "failed to import" in err
    with pytest.raises(policies.BrokenPolicyError, match="broken-one"):
        policies.load_policy("broken-one")
