"""docs/notebook.md stays true to the client: every client method it calls exists and takes the
keywords it passes, and each frame method is shown with its output."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

from service.client import Client

DOC = (Path(__file__).resolve().parents[1] / "docs" / "notebook.md").read_text(encoding="utf-8")
CODE = "\n".join(re.findall(r"```python\n(.*?)```", DOC, re.S))


def test_every_client_call_exists_with_its_keywords():
    calls = re.findall(r"client\.(\w+)\(([^()]*(?:\([^()]*\)[^()]*)*)\)", CODE)
    assert calls
    for name, arguments in calls:
        method = getattr(Client, name, None)
        assert callable(method), f"Client.{name} does not exist"
        parameters = inspect.signature(method).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        for keyword in re.findall(r"(?<![=\w])(\w+)=(?!=)", arguments):
            assert keyword in parameters or takes_any, f"Client.{name} takes no {keyword}="


def test_every_frame_method_is_shown_with_output():
    for name in ("runs", "series", "comparison", "sweep_table"):
        assert re.search(rf"client\.{name}\([^)]*frame=True", CODE), name
    assert DOC.count("Out[") >= 6
