"""Progressive delivery in the kb-platform chart (templates/rollouts.yaml): with rollouts on (the
staging and production profiles), the RAG and encoder services are Argo Rollouts of their
Deployments, by canary steps or blue-green, judged by AnalysisTemplates whose PromQL is evaluated
by promtool on made-up series; strict validation against the Argo Rollouts CRDs and acceptance
by a real API server (each shown rejecting a broken object), the autoscalers bound to the
Rollouts by the HPA controller."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kb_platform_tests.dashboard_checks import exposed_names, metric_names
from kb_platform_tests.deploy.chart import (
    CHART,
    crd_schemas,
    helm,
    kubeconform,
    objects,
    of_kind,
    profile_values_file,
    render_text,
    stack_values,
)
from kb_platform_tests.deploy.kube_cluster import KubeCluster
from kb_platform_tests.prometheus_server import binary

pytestmark = pytest.mark.kube

SERVICES = ("rag", "encoder")
PROFILES = ("staging", "production")
STRATEGIES = ("canary", "blueGreen")
HASH = "5d8f7c9b4"  # a rollouts-pod-template-hash, for {{args.pod-hash}}
TEST_NAMESPACE = "kb-rollouts"  # not the chart tests' `kb`: both share the session's cluster


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollouts")


@pytest.fixture(scope="module")
def rendered(folder: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each profile with rollouts, by each strategy; YAML also in <profile>-<strategy>.yaml."""
    out = {}
    for profile in PROFILES:
        for strategy in STRATEGIES:
            values = profile_values_file(profile, folder, rollouts=True, strategy=strategy)
            text = render_text(values)
            (folder / f"{profile}-{strategy}.yaml").write_text(text)
            out[profile, strategy] = objects(text)
    return out


CASES = [(p, s) for p in PROFILES for s in STRATEGIES]


def test_staging_and_production_roll_out_and_the_chart_default_does_not(folder: Path) -> None:
    for profile in PROFILES:
        settings = stack_values(profile)["kb-platform"]["rollouts"]
        assert settings["enabled"] and settings["strategy"] == "canary", profile
    for profile in ("default", "local"):
        assert not stack_values(profile)["kb-platform"]["rollouts"]["enabled"], profile
    default = objects(render_text(profile_values_file("default", folder, rollouts=True)))
    assert not of_kind(default, "Rollout") and not of_kind(default, "AnalysisTemplate")
    for hpa in of_kind(default, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"


@pytest.mark.parametrize(("profile", "strategy"), CASES)
def test_the_rollouts_are_valid_against_the_strict_schemas(
    profile: str, strategy: str, rendered: dict, folder: Path
) -> None:
    objs = rendered[profile, strategy]
    assert set(of_kind(objs, "Rollout")) == {f"kb-platform-{s}" for s in SERVICES}
    assert len(of_kind(objs, "AnalysisTemplate")) == len(SERVICES)
    result = kubeconform(folder / f"{profile}-{strategy}.yaml", crd_schema_dir=crd_schemas(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(objs)} resources found" in result.stdout and "Skipped: 0" in result.stdout


@pytest.mark.parametrize(("profile", "strategy"), CASES)
def test_helm_lint_passes_with_rollouts(profile: str, strategy: str, folder: Path) -> None:
    values = profile_values_file(profile, folder, rollouts=True, strategy=strategy)
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART), "-f", str(values)).stdout


def _broken(rendered: dict, kind: str, change: Any) -> dict[str, Any]:
    original = next(o for o in rendered["production", "canary"] if o["kind"] == kind)
    bad = json.loads(json.dumps(original))
    change(bad["spec"])
    return bad


def _step_weight_as_text(spec: dict) -> None:
    spec["strategy"]["canary"]["steps"][0]["setWeight"] = "ten percent"


def _misspelt_provider(spec: dict) -> None:
    spec["metrics"][0]["provider"] = {"prometheous": spec["metrics"][0]["provider"]["prometheus"]}


def _unknown_workload_ref_field(spec: dict) -> None:
    spec["workloadRef"]["scaledown"] = spec["workloadRef"].pop("scaleDown")


BROKEN = [
    ("Rollout", _step_weight_as_text, "setWeight"),
    ("AnalysisTemplate", _misspelt_provider, "prometheous"),
    ("Rollout", _unknown_workload_ref_field, "scaledown"),
]


@pytest.mark.parametrize(("kind", "change", "field"), BROKEN)
def test_kubeconform_rejects_a_broken_rollout_object(
    kind: str, change: Any, field: str, rendered: dict, folder: Path
) -> None:
    path = folder / f"broken-{kind}-{field}.yaml"
    path.write_text(yaml.safe_dump(_broken(rendered, kind, change)))
    result = kubeconform(path, crd_schema_dir=crd_schemas(folder))
    assert result.returncode != 0 and "Invalid: 1" in result.stdout, result.stdout
    assert field in result.stdout


def test_an_unknown_strategy_is_refused_by_the_chart(folder: Path) -> None:
    values = profile_values_file("production", folder, rollouts=True)
    result = helm(
        "template", "kb", str(CHART), "-f", str(values), "--set", "rollouts.strategy=linear",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "must be canary or blueGreen" in result.stderr


@pytest.mark.parametrize(("profile", "strategy"), CASES)
def test_each_service_rolls_out_its_own_deployment(
    profile: str, strategy: str, rendered: dict
) -> None:
    objs = rendered[profile, strategy]
    deployments, rollouts = of_kind(objs, "Deployment"), of_kind(objs, "Rollout")
    templates, services = of_kind(objs, "AnalysisTemplate"), of_kind(objs, "Service")
    settings = stack_values(profile)["kb-platform"]
    for component in SERVICES:
        name = f"kb-platform-{component}"
        spec, deployment = rollouts[name]["spec"], deployments[name]["spec"]
        ref = spec["workloadRef"]
        assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", name)
        assert ref["scaleDown"] in {"never", "onsuccess", "progressively"}
        assert spec["rollbackWindow"]["revisions"] >= 1  # a reverted tag rolls back at once
        assert spec["selector"] == deployment["selector"]
        # the Rollout owns the replicas: the Deployment names none (the controller scales it
        # down; Argo CD must not scale it back), the HPA, when there is one, scales the Rollout
        assert "replicas" not in deployment
        scaled = settings["services"][component]["autoscaling"]["enabled"]
        assert ("replicas" in spec) != scaled
        health = f"{name}-health"
        assert health in templates
        judged = {"templates": [{"templateName": health}], "args": [_LATEST]}
        if strategy == "canary":
            canary = spec["strategy"]["canary"]
            assert canary["maxUnavailable"] == 0
            # 10 %, a pause for warm-up, judged; 50 %, judged; 100 %
            pause = {"pause": {"duration": settings["rollouts"]["canary"]["firstPause"]}}
            assert canary["steps"] == [
                {"setWeight": 10},
                pause,
                {"analysis": judged},
                {"setWeight": 50},
                {"analysis": judged},
                {"setWeight": 100},
            ]
        else:
            blue_green = spec["strategy"]["blueGreen"]
            assert blue_green["activeService"] == name
            assert blue_green["previewService"] == f"{name}-preview"
            assert {name, f"{name}-preview"} <= set(services)
            assert blue_green["autoPromotionEnabled"] is False
            assert blue_green["prePromotionAnalysis"] == judged
        for metric in templates[health]["spec"]["metrics"]:
            assert int(metric["failureLimit"]) >= 0 and int(metric["count"]) >= 1
            assert metric["successCondition"].startswith("result[0] <= ")


_LATEST = {"name": "pod-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize(("profile", "strategy"), CASES)
def test_autoscalers_budgets_and_monitors_follow_the_rollouts(
    profile: str, strategy: str, rendered: dict
) -> None:
    objs = rendered[profile, strategy]
    deployments, rollouts = of_kind(objs, "Deployment"), of_kind(objs, "Rollout")
    for hpa in of_kind(objs, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("argoproj.io/v1alpha1", "Rollout")
        assert target["name"] in rollouts
    pod_labels = {  # the Rollouts' pods carry their Deployment's template labels
        name: deployments[r["spec"]["workloadRef"]["name"]]["spec"]["template"]["metadata"][
            "labels"
        ]
        for name, r in rollouts.items()
    }
    for pdb in of_kind(objs, "PodDisruptionBudget").values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        if selector.get("app.kubernetes.io/component") in SERVICES:
            assert any(_selects(selector, labels) for labels in pod_labels.values())
    services = of_kind(objs, "Service")
    for component in SERVICES:
        name = f"kb-platform-{component}"
        monitor = of_kind(objs, "ServiceMonitor")[name]["spec"]
        assert monitor["podTargetLabels"] == ["rollouts-pod-template-hash"]
        scraped = [
            s
            for s in services.values()
            if _selects(monitor["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        # one Service scraped per component, and it reaches every pod, old and new (a
        # Service whose selector Argo Rollouts narrows to one version would hide the other)
        assert len(scraped) == 1, [s["metadata"]["name"] for s in scraped]
        (service,) = scraped
        assert service["spec"]["selector"] == rollouts[name]["spec"]["selector"]["matchLabels"]
        job = service["metadata"]["labels"].get(monitor.get("jobLabel", ""), "")
        assert (job or service["metadata"]["name"]) == name  # the job the analysis queries
        if strategy == "blueGreen":
            assert service["metadata"]["name"] == f"{name}-metrics"
            assert service["spec"].get("clusterIP") == "None"


# --- the analysis' PromQL ------------------------------------------------------------------


def _queries(objs: list[dict[str, Any]], component: str) -> dict[str, tuple[str, float]]:
    """metric name -> (its query with the pod hash filled in, its successCondition bound)."""
    template = of_kind(objs, "AnalysisTemplate")[f"kb-platform-{component}-health"]
    out = {}
    for metric in template["spec"]["metrics"]:
        query = metric["provider"]["prometheus"]["query"].replace("{{args.pod-hash}}", HASH)
        assert "{{" not in query, query
        bound = float(metric["successCondition"].removeprefix("result[0] <= "))
        out[metric["name"]] = (query, bound)
    return out


def test_the_queries_name_the_metrics_the_services_export(rendered: dict) -> None:
    from bentoml._internal.server.http import instruments

    from kb_platform.serving.metrics import metrics

    rag = metrics().requests
    assert {"endpoint", "status"} <= set(rag._labelnames)
    exported = {"rag": exposed_names(rag)}
    # BentoML's HTTP middleware (the encoder runs with metrics on): its request histogram
    source = inspect.getsource(instruments)
    assert '"request_duration_seconds"' in source and '"http_response_code"' in source
    exported["encoder"] = {
        f"bentoml_service_request_duration_seconds{s}" for s in ("_bucket", "_count", "_sum")
    }
    analysis = stack_values("production")["kb-platform"]["rollouts"]["analysis"]
    for component in SERVICES:
        queries = _queries(rendered["production", "canary"], component)
        for query, _ in queries.values():
            assert metric_names(query) - {"vector", "le"} <= exported[component], query
            assert f"{analysis['endpointLabel']}=~" in query
        status = analysis["services"][component]["statusLabel"]
        assert f'{status}=~"5.."' in queries["error-rate"][0]


def _series(metric: str, labels: dict[str, str], per_minute: float) -> dict[str, str]:
    text = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{text}}}", "values": f"0+{per_minute}x10"}


def _input_series(component: str, endpoint_label: str) -> list[dict[str, str]]:
    """Ten minutes of one service's requests: the judged pods (HASH) answer 57 requests a
    minute on its first API route and fail 3 on its second (5 % errors), 100 a minute in the
    latency buckets (p95 in the 0.25-0.5 s bucket), and fail their probes (not API requests:
    not counted); the old pods fail everything, the other service too (neither is judged)."""
    s = stack_values("production")["kb-platform"]["rollouts"]["analysis"]["services"][component]
    histogram, status = s["histogram"], s["statusLabel"]
    routes = s["routes"].split("|")
    latency_route = s["latencyRoutes"].split("|")[0]
    job = f"kb-platform-{component}"
    other = f"kb-platform-{'encoder' if component == 'rag' else 'rag'}"

    def labels(route: str, code: str, pod_hash: str = HASH, job: str = job) -> dict[str, str]:
        return {
            "namespace": "kb",
            "job": job,
            "rollouts_pod_template_hash": pod_hash,
            endpoint_label: route,
            status: code,
        }

    series = [
        _series(f"{histogram}_count", labels(routes[0], "200"), 57),
        _series(f"{histogram}_count", labels(routes[1], "500"), 3),
        _series(f"{histogram}_count", labels("/healthz", "503"), 600),
        _series(f"{histogram}_count", labels(routes[0], "500", pod_hash="0ld"), 600),
        _series(f"{histogram}_count", labels(routes[0], "500", job=other), 600),
    ]
    for le, count in (("0.05", 50), ("0.1", 80), ("0.25", 90), ("0.5", 100), ("+Inf", 100)):
        series.append(
            _series(f"{histogram}_bucket", {**labels(latency_route, "200"), "le": le}, count)
        )
        slow = {**labels(latency_route, "200", pod_hash="0ld"), "le": le}
        series.append(_series(f"{histogram}_bucket", slow, 0 if le != "+Inf" else 100))
    return series


def _promtool_test(folder: Path, name: str, tests: list[dict[str, Any]]) -> str:
    path = folder / f"{name}.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run(
        [binary("promtool"), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("component", SERVICES)
def test_the_analysis_queries_judge_only_the_new_pods_under_promtool(
    component: str, rendered: dict, folder: Path
) -> None:
    """Prometheus' own engine (promtool's rule unit tests) evaluates the rendered queries:
    5 % errors and p95 0.375 s for the judged pods whatever the other pods do; 0 when the new
    pods have had no requests yet (no data is no failure, not an error measurement)."""
    analysis = stack_values("production")["kb-platform"]["rollouts"]["analysis"]
    queries = _queries(rendered["production", "canary"], component)
    errors, error_bound = queries["error-rate"]
    latency, latency_bound = queries["p95-latency"]
    idle = {q: q.replace(HASH, "no-such-pods") for q in (errors, latency)}
    expected = [(errors, 0.05), (latency, 0.375), (idle[errors], 0), (idle[latency], 0)]
    tests = [
        {
            "interval": "1m",
            "input_series": _input_series(component, analysis["endpointLabel"]),
            "promql_expr_test": [
                {
                    # rounded: the engine's float sums need not be exact
                    "expr": f"round(({expr}), 0.0001)",
                    "eval_time": "10m",
                    "exp_samples": [{"labels": "{}", "value": v}],
                }
                for expr, v in expected
            ],
        }
    ]
    out = _promtool_test(folder, f"analysis-{component}", tests)
    assert out.startswith("rc=0") and "SUCCESS" in out, out
    # what the Rollout then decides: 5 % errors fail the step, 0.375 s passes it
    assert error_bound < 0.05 and latency_bound >= 0.375


def test_promtool_rejects_a_broken_query_and_a_wrong_expectation(
    rendered: dict, folder: Path
) -> None:
    query, _ = _queries(rendered["production", "canary"], "rag")["error-rate"]
    broken = query.replace("[2m]))", "[2m])", 1)
    for name, expr, value in (("broken-query", broken, 0), ("wrong-value", query, 1)):
        case = {"expr": expr, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": value}]}
        tests = [{"interval": "1m", "input_series": [], "promql_expr_test": [case]}]
        out = _promtool_test(folder, name, tests)
        assert not out.startswith("rc=0"), out
        if name == "broken-query":
            assert "parse error" in out.lower(), out


# --- on the API server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def applied(cluster_with_crds: KubeCluster, folder: Path) -> Iterator[KubeCluster]:
    """The production profile with its canary Rollouts applied (server-side) in a namespace of
    its own; its cluster-wide objects (the StorageClass, the VolumeSnapshotClass, which the
    chart tests' `helm install` owns) only as a server-side dry run. No Rollouts controller
    runs here: the test scales the Rollouts' Deployments down as it would (workloadRef
    scaleDown), so that their pods hold no GPU the other tests of the session count on."""
    cluster = cluster_with_crds
    cluster.kubectl("create", "namespace", TEST_NAMESPACE)
    values = profile_values_file("production", folder, rollouts=True)
    text = helm("template", "kb", str(CHART), "--namespace", TEST_NAMESPACE, "-f", str(values))
    objs = objects(text.stdout)
    namespaced = [o for o in objs if o["kind"] not in {"StorageClass", "VolumeSnapshotClass"}]
    cluster_wide = [o for o in objs if o not in namespaced]
    assert len(cluster_wide) == 2
    _apply(cluster, namespaced)
    _apply(cluster, cluster_wide, "--dry-run=server")
    for component in SERVICES:
        cluster.kubectl(
            "scale", "deployment", f"kb-platform-{component}", "--replicas=0",
            "-n", TEST_NAMESPACE,
        )  # fmt: skip
    yield cluster
    cluster.kubectl("delete", "namespace", TEST_NAMESPACE, "--wait=false")


def _apply(cluster: KubeCluster, objs: list[dict[str, Any]], *args: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": objs}
    cluster.kubectl(
        "apply", "--server-side", "-n", TEST_NAMESPACE, "-f", "-", *args,
        input=json.dumps(manifest),
    )  # fmt: skip


def test_the_api_server_accepts_the_rollouts_and_their_analysis(
    applied: KubeCluster, folder: Path
) -> None:
    rollouts = applied.get_json("rollouts.argoproj.io", "-n", TEST_NAMESPACE)["items"]
    assert {r["metadata"]["name"] for r in rollouts} == {f"kb-platform-{s}" for s in SERVICES}
    templates = applied.get_json("analysistemplates.argoproj.io", "-n", TEST_NAMESPACE)["items"]
    assert len(templates) == len(SERVICES)
    # blue-green too: the API server takes its Rollouts, preview and metrics Services
    values = profile_values_file("production", folder, rollouts=True, strategy="blueGreen")
    text = helm("template", "kb", str(CHART), "--namespace", TEST_NAMESPACE, "-f", str(values))
    _apply(applied, objects(text.stdout), "--dry-run=server")


def _condition(cluster: KubeCluster, hpa: str, kind: str) -> dict[str, Any] | None:
    found = cluster.get_json("hpa", hpa, "-n", TEST_NAMESPACE)
    conditions = found.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), None)


def _hpas(cluster: KubeCluster) -> list[dict[str, Any]]:
    return cluster.get_json("hpa", "-n", TEST_NAMESPACE)["items"]


def _rollout_replicas(cluster: KubeCluster, name: str) -> int | None:
    found = cluster.get_json("rollouts.argoproj.io", name, "-n", TEST_NAMESPACE)
    return found["spec"].get("replicas")


def _wait_condition(cluster: KubeCluster, hpa: str, kind: str, status: str) -> dict[str, Any]:
    """The HPA's condition once it has ``status`` (the controller retries a target it could
    not resolve yet: its discovery of new CRDs lags)."""
    deadline = time.monotonic() + 90
    while (found := _condition(cluster, hpa, kind)) is None or found["status"] != status:
        assert time.monotonic() < deadline, f"{hpa}: {kind} is {found}, not {status}"
        time.sleep(1)
    return found


def test_the_autoscalers_scale_the_rollouts_to_their_minimum(applied: KubeCluster) -> None:
    """The HPA controller reaches each Rollout through its scale subresource and raises it to
    minReplicas (no metrics API here: it can do no more). No Rollouts controller runs here, so
    the test first does what that controller does with a Rollout that names no replicas (the
    chart leaves them to the HPA): it sets .spec.replicas to 1 (rollout/controller.go, for the
    HPA's sake). An HPA naming the Rollout under the wrong API group never gets its scale."""
    hpas = {h["metadata"]["name"]: h for h in _hpas(applied)}
    assert set(hpas) == {f"kb-platform-{s}" for s in SERVICES}
    for name in hpas:
        applied.kubectl(
            "patch", "rollouts.argoproj.io", name, "-n", TEST_NAMESPACE, "--type=merge",
            "-p", '{"spec": {"replicas": 1}}',
        )  # fmt: skip
    for name, hpa in hpas.items():
        able = _wait_condition(applied, name, "AbleToScale", "True")
        assert able["reason"] in {"SucceededGetScale", "SucceededRescale"}, able
        minimum = hpa["spec"]["minReplicas"]
        deadline = time.monotonic() + 90
        while (replicas := _rollout_replicas(applied, name)) != minimum:
            assert time.monotonic() < deadline, f"{name}: {replicas} replicas, not {minimum}"
            time.sleep(1)
    assert _rollout_replicas(applied, "kb-platform-rag") == 3  # production's minimum
    spec = applied.get_json("hpa", "kb-platform-rag", "-n", TEST_NAMESPACE)["spec"]
    target = {"apiVersion": "apps/v1", "kind": "Rollout", "name": "kb-platform-rag"}
    broken = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "kb-platform-rag-broken"},
        "spec": {**spec, "scaleTargetRef": target},
    }
    _apply(applied, [broken])
    able = _wait_condition(applied, "kb-platform-rag-broken", "AbleToScale", "False")
    assert able["reason"] == "FailedGetScale", able


@pytest.mark.parametrize(("kind", "change", "field"), BROKEN)
def test_the_api_server_refuses_a_broken_rollout_object(
    kind: str, change: Any, field: str, rendered: dict, cluster_with_crds: KubeCluster
) -> None:
    bad = _broken(rendered, kind, change)
    bad["metadata"]["name"] += "-broken"
    manifest = json.dumps(bad)
    result = cluster_with_crds.kubectl(
        "apply", "--server-side", "--dry-run=server", "-n", "default", "-f", "-",
        input=manifest, check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout
    assert re.search(field, result.stderr), result.stderr
