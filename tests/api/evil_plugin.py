"""Never imported by the service: registering a plugin by an import path must be refused."""
import os

os.environ["VMEMLAB_TEST_EVIL_IMPORTED"] = "1"


def boom():  # pragma: no cover
    raise AssertionError("the service called code named by an import path")
