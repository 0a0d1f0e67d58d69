import os
import sys
from pathlib import Path

import pytest

from service import policies

from . import hostile_plugins
from .helpers import install_test_distribution

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# CI and fresh clones lay shared/ beside the project
SHARED_TRACES = Path(os.environ.get("VMEMLAB_SHARED_TRACES", ROOT.parent / "shared" / "traces"))


def trace_files() -> list[Path]:
    """The traces of tests/data and, where it is laid out, shared/traces (a name once)."""
    found = {p.name: p for p in sorted(DATA.glob("*.txt.gz"))}
    if SHARED_TRACES.is_dir():
        found.update({p.name: p for p in sorted(SHARED_TRACES.glob("*.txt.gz"))})
    return [found[k] for k in sorted(found)]


@pytest.fixture
def data_dir() -> Path:
    return DATA


# --- hostile plugins (tests/hostile_plugins.py), installed the way a distribution is ------------

HOSTILE_MODULE = "vmemlab_hostile"


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The hostile distribution on sys.path for one test; its modules forgotten after it."""
    entry_points = {name: f"{HOSTILE_MODULE}:{cls}" for name, cls in hostile_plugins.ENTRY_POINTS.items()}
    entry_points["hostile-import"] = "vmemlab_hostile_import:SideEffect"
    folder = install_test_distribution(tmp_path / "site", "vmemlab-hostile", {
        HOSTILE_MODULE: Path(hostile_plugins.__file__).read_text(),
        "vmemlab_hostile_import": hostile_plugins.SIDE_EFFECT_MODULE}, entry_points)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in (HOSTILE_MODULE, "vmemlab_hostile_import"):
        sys.modules.pop(name, None)
    policies._tainted.pop("hostile-import", None)


@pytest.fixture
def with_broken_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed entry point ``broken-one`` whose module does not exist."""
    from importlib.metadata import EntryPoint

    real = policies.entry_points_by_name

    def entry_points():
        eps = dict(real())
        eps["broken-one"] = EntryPoint(name="broken-one", value="no_such_module_xyz:Policy", group=policies.GROUP)
        return eps

    monkeypatch.setattr(policies, "entry_points_by_name", entry_points)
