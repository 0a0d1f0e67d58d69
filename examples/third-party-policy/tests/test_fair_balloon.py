"""What fair-balloon does, on the contract kit's own scenarios."""
import pytest

from service.sdk import PolicyParameterError
from service.sdk.testing import SCENARIOS, run_checked
from vmemlab_example_policy import FairBalloonPolicy


def vm(result, name):
    return next(v for v in result.summary["vms"] if v["name"] == name)


def test_under_pressure_every_vm_is_ballooned_but_not_below_the_floor():
    run = run_checked(FairBalloonPolicy.create({"floor_mb": 32}), SCENARIOS["memory_pressure"])
    series = run.result.series
    assert "pressure" in series["host_state"]
    for name in ("a", "b"):
        assert vm(run.result, name)["ballooned_peak_mb"] > 0
        assert min(series["vms"][name]["visible_mb"]) >= 32
        assert set(run.result.series["policy"][name]) == {"fair_share_mb"}


def test_a_vm_without_a_balloon_driver_is_held_to_its_share_by_host_paging():
    run = run_checked(FairBalloonPolicy.create({"floor_mb": 32}), SCENARIOS["no_balloon_driver"])
    legacy = vm(run.result, "legacy")
    assert legacy["ballooned_peak_mb"] == 0 and legacy["host_swapped_peak_mb"] > 0
    assert vm(run.result, "tools")["ballooned_peak_mb"] > 0


def test_no_pressure_no_balloon():
    run = run_checked(FairBalloonPolicy.create(), SCENARIOS["idle_vm"])
    assert set(run.result.series["host_state"]) == {"steady"}
    assert all(v["ballooned_peak_mb"] == 0 for v in run.result.summary["vms"])


@pytest.mark.parametrize("params", [{"free_threshold_pct": 0.5}, {"free_threshold_pct": 60}, {"floor_mb": -1}])
def test_parameters_out_of_range_are_refused(params):
    with pytest.raises(PolicyParameterError) as err:
        FairBalloonPolicy.create(params)
    assert set(err.value.messages) == set(params)
