"""Discovery survives a broken third-party package: it is reported, the others still list."""
from __future__ import annotations

import pytest

from service import policies
from service.cli import main


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


def test_a_distribution_installed_while_running_is_found(tmp_path, monkeypatch):
    """Entry points are cached, but a distribution appearing in a folder of the search path (an
    install) or a new folder on it is seen at the next look-up."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = policies.entry_points_by_name()
    assert "static" in before and "late-policy" not in before
    assert policies.entry_points_by_name().keys() == before.keys()          # from the cache
    info = tmp_path / "late_policy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: late-policy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{policies.GROUP}]\nlate-policy = late_policy:Late\n")
    import os
    os.utime(tmp_path, ns=(0, os.stat(tmp_path).st_mtime_ns + 10**9))     # coarse clocks: a visible change
    assert "late-policy" in policies.entry_points_by_name()
