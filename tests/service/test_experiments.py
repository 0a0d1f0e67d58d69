"""create_experiment: everything is validated before anything is stored; references to stored
hosts, templates and traces are resolved; each policy's version is pinned; idempotency keys."""
from __future__ import annotations

import dataclasses
import gzip

import pytest
from sqlalchemy import func, select

from service import db, registry
from service.catalog import TraceUploadError, store_trace, validate_host_spec
from service.experiments import create_experiment
from service.idempotency import IdempotencyConflict
from service.models import Experiment, Host, PluginRegistration, Run, Trace, VMTemplate
from service.policies import load_policy
from service.scenario import ScenarioValidationError

from .helpers import tiny


def _count(model) -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(model))


def _create(doc, **kwargs) -> Experiment:
    with db.session_scope() as s:
        return create_experiment(s, doc, **kwargs)


def _errors(doc, **kwargs) -> dict[str, list[str]]:
    with pytest.raises(ScenarioValidationError) as info:
        _create(doc, **kwargs)
    assert _count(Experiment) == 0 and _count(Run) == 0, "a rejected experiment stored something"
    return info.value.errors


def test_one_queued_run_per_policy_with_pinned_versions(settings):
    experiment = _create(tiny(policies=("static", "esx", "dynamic-memory")))
    with db.session_scope() as s:
        experiment = s.get(Experiment, experiment.id)
        runs = experiment.runs
        assert [r.policy_name for r in runs] == ["static", "esx", "dynamic-memory"]
        for run in runs:
            assert run.status == "queued" and run.attempts == 0 and run.progress == 0
            assert run.policy_version == load_policy(run.policy_name).version
            assert run.plugin_distribution == "vmemlab"
            assert run.seed == 3 and len(run.fingerprint) == 64
        assert len({r.fingerprint for r in runs}) == 3
        # effective parameters, defaults written out
        assert runs[1].params["idle_tax_pct"] == 75.0
        # the snapshot has every field, so a run needs nothing else
        assert experiment.scenario["epoch_s"] == 0.5
        assert experiment.scenario["vms"][0]["replacement"]
        assert experiment.seed == 3 and experiment.duration_s == 2.0 and experiment.name == "tiny"
        assert experiment.created is True


def test_a_bad_scenario_names_the_field_and_stores_nothing(settings):
    doc = tiny()
    doc["vms"][1]["memory_mb"] = -5
    doc["vms"][0]["workload"]["phases"][0]["kind"] = "random"
    errors = _errors(doc)
    assert "vms[1].memory_mb" in errors
    assert "vms[0].workload.phases[0].kind" in errors


def test_policy_problems_are_reported_by_position(settings):
    errors = _errors(tiny(), policies=[{"name": "no-such-policy"},
                                       {"name": "esx", "params": {"idle_tax_pct": 500}},
                                       {"name": "esx", "params": {"bogus": 1}}])
    assert "no-such-policy" in errors["policies[0].name"][0]
    assert "policies[1].params.idle_tax_pct" in errors
    assert "policies[2].params.bogus" in errors


def test_the_same_policy_twice_is_refused(settings):
    errors = _errors(tiny(), policies=[{"name": "esx"}, {"name": "esx", "params": {"idle_tax_pct": 75.0}}])
    assert "same policy and parameters" in errors["policies[1]"][0]


def test_no_policy_means_the_static_baseline(settings):
    doc = tiny()
    del doc["policies"]
    experiment = _create(doc)
    assert [r.policy_name for r in experiment.runs] == ["static"]


def test_a_policy_disabled_in_the_registry_is_refused(settings):
    with db.session_scope() as s:
        rows = registry.sync(s, "builtin")
        assert {"static", "esx", "kvm"} <= {r.name for r in rows}
        s.scalar(select(PluginRegistration).where(PluginRegistration.name == "kvm")).enabled = False
    errors = _errors(tiny(policies=("static", "kvm")))
    assert "disabled" in errors["policies[1].name"][0]
    with db.session_scope() as s:          # a re-sync keeps the administrator's choice
        registry.sync(s, "builtin")
        assert not s.scalar(select(PluginRegistration).where(PluginRegistration.name == "kvm")).enabled


def test_host_and_templates_by_id(settings):
    with db.session_scope() as s:
        host = Host(name="small", spec=validate_host_spec({"memory_mb": 1024, "swap_device": "nvme"}))
        template = VMTemplate(name="web", spec={"memory_mb": 256, "os_mb": 32, "replacement": "clock"})
        s.add_all([host, template])
        s.flush()
        host_id, template_id = host.id, template.id
        assert host.version == 1
    doc = tiny()
    del doc["host"]
    doc["host_id"] = host_id
    doc["vms"][1] = {"template_id": template_id, "name": "web1",
                     "workload": {"phases": [{"kind": "idle", "duration_s": 2}]}}
    experiment = _create(doc)
    with db.session_scope() as s:
        experiment = s.get(Experiment, experiment.id)
        assert experiment.host_id == host_id and experiment.runs[0].host_id == host_id
        assert experiment.scenario["host"]["memory_mb"] == 1024
        assert experiment.scenario["vms"][1]["replacement"] == "clock"
        assert experiment.scenario["vms"][1]["name"] == "web1"
        # a later edit of the host does not change the experiment's snapshot
        s.get(Host, host_id).spec = {"memory_mb": 2048}
    with db.session_scope() as s:
        assert s.get(Host, host_id).version == 2
        assert s.get(Experiment, experiment.id).scenario["host"]["memory_mb"] == 1024


def test_unknown_references(settings):
    doc = tiny()
    del doc["host"]
    doc["host_id"] = 999
    doc["vms"][0] = {"template_id": 42, "name": "x"}
    errors = _errors(doc)
    assert errors["host_id"] == ["no host with id 999"]
    assert "no VM template" in errors["vms[0].template_id"][0]


def test_traces_by_id_only_from_the_store(settings):
    with db.session_scope() as s:
        # mtime=0: gzip stamps the current second into its header, and the two uploads must be
        # byte-identical even when they straddle a second
        data = gzip.compress(b"\n".join(str(i % 700).encode() for i in range(20000)), mtime=0)
        trace = store_trace(s, "sort", data)
        again = store_trace(s, "sort again", bytes(data))
        assert again.id == trace.id                      # same content, stored once
        assert (trace.length, trace.footprint_pages, trace.format) == (20000, 700, "gzip")
        trace_id, path = trace.id, trace.path
    assert (settings.trace_dir / path).is_file()
    doc = tiny()
    doc["vms"][0]["workload"]["phases"] = [{"kind": "trace", "trace_id": trace_id}]
    experiment = _create(doc)
    with db.session_scope() as s:
        experiment = s.get(Experiment, experiment.id)
        assert experiment.scenario["vms"][0]["workload"]["phases"][0]["trace"] == path   # relative
        assert [t.id for t in experiment.traces] == [trace_id]
        assert s.get(Trace, trace_id).ref_count == 1

    for name in ("/etc/passwd", "../../etc/passwd", "missing.txt"):
        doc["vms"][0]["workload"]["phases"] = [{"kind": "trace", "trace": name}]
        with pytest.raises(ScenarioValidationError) as info:
            _create(doc)
        assert "no stored trace" in info.value.errors["vms[0].workload.phases[0].trace"][0]


def test_trace_uploads_are_checked(settings):
    with db.session_scope() as s:
        with pytest.raises(TraceUploadError, match="line 2"):
            store_trace(s, "bad", b"1\nx\n")
        small = dataclasses.replace(settings, max_trace_bytes=10)
        with pytest.raises(TraceUploadError, match="limit"):
            store_trace(s, "big", b"1\n" * 100, settings=small)
    assert _count(Trace) == 0
    assert [p.name for p in settings.trace_dir.iterdir()] == []


def test_idempotency_key(settings):
    first = _create(tiny(), idempotency_key="k-1")
    again = _create(tiny(), idempotency_key="k-1")
    assert again.id == first.id and again.created is False
    assert _count(Experiment) == 1 and _count(Run) == 1
    with pytest.raises(IdempotencyConflict):
        _create(tiny(duration_s=3.0), idempotency_key="k-1")
    assert _create(tiny(), idempotency_key="k-2").id != first.id


def test_fingerprints_identify_the_simulated_configuration(settings):
    a = _create(tiny(name="first"))
    b = _create(tiny(name="second", description="same thing, other words"))
    c = _create(tiny(seed=4))
    d = _create(tiny(), policies=[{"name": "static", "params": {}}])
    fp = [e.runs[0].fingerprint for e in (a, b, c, d)]
    assert fp[0] == fp[1] == fp[3] and fp[2] != fp[0]


def test_deleting_an_experiment_releases_its_traces(settings):
    from service.catalog import TraceInUse, delete_trace
    from service.experiments import delete_experiment
    from service.models import RunSeries
    from service.tasks import execute_run

    with db.session_scope() as s:
        trace_id = store_trace(s, "t", b"\n".join(str(i % 50).encode() for i in range(5000))).id
    doc = tiny()
    doc["vms"][0]["workload"]["phases"] = [{"kind": "trace", "trace_id": trace_id}]
    experiment = _create(doc)
    assert execute_run(experiment.runs[0].id) == "succeeded"
    with db.session_scope() as s:
        with pytest.raises(TraceInUse):
            delete_trace(s, s.get(Trace, trace_id))
    with db.session_scope() as s:
        delete_experiment(s, s.get(Experiment, experiment.id))
    assert _count(Experiment) == _count(Run) == _count(RunSeries) == 0
    with db.session_scope() as s:
        trace = s.get(Trace, trace_id)
        assert trace.ref_count == 0
        path = settings.trace_dir / trace.path
        delete_trace(s, trace)
    assert not path.exists() and _count(Trace) == 0


def test_host_and_template_documents_are_checked_on_their_own():
    from service.catalog import validate_vm_template_spec

    with pytest.raises(ScenarioValidationError) as info:
        validate_host_spec({"memory_mb": 0, "devices": {"fast": {"read_us": -1, "write_us": 5}}})
    assert {"memory_mb", "devices.fast.read_us"} <= set(info.value.errors)
    assert validate_vm_template_spec({"memory_mb": 512, "os_mb": 64})["memory_mb"] == 512
    with pytest.raises(ScenarioValidationError) as info:
        validate_vm_template_spec({"memory_mb": 512, "replacement": "mru", "colour": "blue"})
    assert {"replacement", "colour"} <= set(info.value.errors)
