"""fair-balloon keeps the vmemlab policy contract: one test per check of the kit, with the
default parameters and with a floor low enough that the built-in scenarios really balloon."""
import pytest

from service.sdk.testing import check_policy, contract_test_cases
from vmemlab_example_policy import FairBalloonPolicy


@pytest.mark.parametrize("case", contract_test_cases(FairBalloonPolicy))
def test_contract(case):
    case()


@pytest.mark.parametrize("case", contract_test_cases(FairBalloonPolicy, params={"floor_mb": 32}))
def test_contract_with_a_low_floor(case):
    case()


def test_whole_contract_in_one_call():
    check_policy(FairBalloonPolicy, {"free_threshold_pct": 25, "floor_mb": 0})
