"""``vmemlab plugins new NAME`` writes a distribution that installs with pip and passes its own
contract tests as generated; once installed, vmemlab lists and runs its policy."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from service.cli import main


def test_a_new_plugin_installs_and_passes_its_own_tests(tmp_path: Path, capsys):
    assert main(["plugins", "new", "my-policy", "--dir", str(tmp_path)]) == 0
    folder = tmp_path / "vmemlab-my-policy"
    assert "created" in capsys.readouterr().out
    assert (folder / "src" / "vmemlab_my_policy" / "__init__.py").is_file()
    assert 'my-policy = "vmemlab_my_policy:MyPolicyPolicy"' in (folder / "pyproject.toml").read_text()

    site = tmp_path / "site"       # a real install (pip builds the wheel), into a folder of its own
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(folder)], check=True, capture_output=True, text=True)
    assert list(site.glob("vmemlab_my_policy-0.1.0.dist-info"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parents[1])])}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    listed = subprocess.run([sys.executable, "-m", "service.cli", "plugins"], env=env, capture_output=True, text=True)
    assert "my-policy 0.1.0  (vmemlab-my-policy 0.1.0; trusts the guest: no)" in listed.stdout


def test_a_bad_name_or_an_existing_folder_is_refused(tmp_path: Path, capsys):
    assert main(["plugins", "new", "my.policy", "--dir", str(tmp_path)]) == 2
    assert "letters, digits, '-' and '_'" in capsys.readouterr().err
    assert main(["plugins", "new", "ok", "--dir", str(tmp_path)]) == 0
    assert main(["plugins", "new", "ok", "--dir", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err
