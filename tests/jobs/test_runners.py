"""Job runners: the Kubernetes manifests validate against the Kubernetes schemas
(``kubernetes-validate``, strict: no unknown field), say what the settings ask for, and are what
``refluent retrain --dry-run`` prints; the local runner reports a job that failed with its
error."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from refluent.cli.app import app
from refluent.config import Settings
from refluent.jobs.runners import JobSpec, make_runner
from refluent.jobs.runners.k8s import KubernetesJobRunner
from refluent.jobs.runners.kube import KubeRunner
from refluent.jobs.runners.kubeflow import KubeflowRunner
from refluent.jobs.runners.local import LocalRunner

pytestmark = pytest.mark.unit

K8S_VERSION = "1.30.0"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SPEC = JobSpec("Churn_Model.v2", "5b0e0c1f2a3d4e5f60718293a4b5c6d7", snapshot=1234)
RETRAIN = ["retrain", "Churn_Model.v2", "--run-id", SPEC.run_id, "--runner", "local",
           "--report", "--snapshot", "1234"]
JOBS: list[dict[str, Any]] = [
    {},
    {"gpus": 0, "secret": "refluent-secrets", "service_account": "trainer",
     "config_map": None, "namespace": "ml"},
    {"gpus": 4, "workers": 3, "cpu": "8", "memory": "64Gi"},
]


def _valid(manifest: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:  # the message, not the whole schema
        pytest.fail(f"{manifest['kind']} does not validate: {exc.message} at "
                    f"{list(exc.path)}")


def _check_pod(template: dict[str, Any], jobs: dict[str, Any], command_head: list[str],
               container_name: str) -> None:
    pod = template["spec"]
    (c,) = pod["containers"]
    settings = Settings(jobs=jobs).jobs
    assert c["name"] == container_name and c["image"] == settings.image
    assert c["command"] == [*command_head, *RETRAIN]
    gpus = settings.gpus
    assert c["resources"]["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    assert c["resources"]["requests"]["cpu"] == settings.cpu
    refs = [next(iter(e.values()))["name"] for e in c.get("envFrom", [])]
    assert refs == [n for n in (settings.config_map, settings.secret) if n]
    assert pod["restartPolicy"] == "Never"
    assert pod.get("serviceAccountName") == settings.service_account
    assert ("tolerations" in pod) == bool(gpus)
    assert template["metadata"]["labels"]["refluent.io/run-id"] == SPEC.run_id


@pytest.mark.parametrize("jobs", JOBS)
def test_k8s__the_job_validates_and_asks_for_what_the_settings_say(jobs: dict[str, Any]
                                                                   ) -> None:
    manifest = KubernetesJobRunner(Settings(jobs=jobs)).manifest(SPEC)
    _valid(manifest)
    name = manifest["metadata"]["name"]
    assert DNS_1123.match(name) and len(name) <= 63
    assert manifest["metadata"]["namespace"] == Settings(jobs=jobs).jobs.namespace
    _check_pod(manifest["spec"]["template"], jobs, ["refluent"], "retrain")
    _valid({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
            "template": manifest["spec"]["template"]})


@pytest.mark.parametrize("jobs", JOBS)
def test_kubeflow__the_pytorchjob_s_pods_validate_and_its_envelope_is_the_operator_s(
        jobs: dict[str, Any]) -> None:
    settings = Settings(jobs=jobs).jobs
    manifest = KubeflowRunner(Settings(jobs=jobs)).manifest(SPEC)
    # The Training Operator's v1 API: kubernetes-validate has no schema for custom
    # resources, so the envelope is checked field by field against the operator's API.
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    spec = manifest["spec"]
    assert set(spec) == {"runPolicy", "nprocPerNode", "pytorchReplicaSpecs"}
    assert set(spec["runPolicy"]) <= {"cleanPodPolicy", "ttlSecondsAfterFinished",
                                      "activeDeadlineSeconds", "backoffLimit",
                                      "schedulingPolicy", "suspend", "managedBy"}
    assert spec["runPolicy"]["cleanPodPolicy"] in ("All", "Running", "None")
    assert spec["nprocPerNode"] == str(max(settings.gpus, 1))
    replicas = spec["pytorchReplicaSpecs"]
    assert set(replicas) == ({"Master", "Worker"} if settings.workers else {"Master"})
    assert replicas["Master"]["replicas"] == 1
    if settings.workers:
        assert replicas["Worker"]["replicas"] == settings.workers
    for role in replicas.values():
        assert set(role) == {"replicas", "restartPolicy", "template"}
        assert role["restartPolicy"] in ("Always", "OnFailure", "Never", "ExitCode")
        _valid({"apiVersion": "v1", "kind": "PodTemplate",
                "metadata": {"name": manifest["metadata"]["name"]},
                "template": role["template"]})
        _check_pod(role["template"], jobs, ["torchrun", "-m", "refluent.cli"], "pytorch")


@pytest.mark.parametrize("runner", ["k8s", "kubeflow"])
def test_cli__dry_run_prints_the_manifest(runner: str, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setenv("REFLUENT_JOBS__GPUS", "2")
    result = CliRunner().invoke(app, ["retrain", "Churn_Model.v2", "--runner", runner,
                                      "--run-id", SPEC.run_id, "--snapshot", "1234",
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    made = make_runner(runner, Settings(jobs={"gpus": 2}))
    assert isinstance(made, KubeRunner)
    expected = made.manifest(SPEC)
    assert yaml.safe_load(result.output) == expected


def test_local__a_failed_job_is_reported_with_its_error(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "warehouse").mkdir()
    monkeypatch.setenv("REFLUENT_LAKE__CATALOG_URI", f"sqlite:///{tmp_path / 'catalog.db'}")
    monkeypatch.setenv("REFLUENT_LAKE__WAREHOUSE", (tmp_path / "warehouse").as_uri())
    runner = LocalRunner(Settings())
    launched = runner.launch(JobSpec("nobody", "r1"))
    assert launched.finished and launched.ok is False and launched.exit_code == 1
    assert "exit code 1" in launched.detail and "nobody" in launched.detail
    assert runner.render(JobSpec("nobody", "r1")).endswith(
        "-m refluent.cli retrain nobody --run-id r1 --runner local --report")


def test_make_runner__an_unknown_runner_is_named() -> None:
    with pytest.raises(ValueError, match="unknown job runner 'slurm'; known: local, k8s"):
        make_runner("slurm", Settings())


@pytest.mark.parametrize(("runner", "path"), [
    ("k8s", "/apis/batch/v1/namespaces/ml/jobs"),
    ("kubeflow", "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs")])
def test_launch__submits_the_manifest_through_the_client_once(
        runner: str, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API server on loopback that records what it is sent: 201 the first time a name is
    created, 409 (it exists) after; the runner takes both as started."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, dict[str, Any]]] = []

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            exists = any(b["metadata"]["name"] == body["metadata"]["name"]
                         for _, b in received)
            received.append((self.path, body))
            status = 409 if exists else 201
            answer = json.dumps({"kind": "Status", "code": 409} if exists else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "local", "cluster": {
                "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "me", "user": {"token": "t"}}],
            "contexts": [{"name": "test", "context": {"cluster": "local", "user": "me"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        made = make_runner(runner, Settings(jobs={"namespace": "ml"}))
        assert isinstance(made, KubeRunner)
        first, second = made.launch(SPEC), made.launch(SPEC)
    finally:
        server.shutdown()
    assert [p for p, _ in received] == [path, path]
    assert received[0][1] == made.manifest(SPEC)
    assert first == second and first.job == made.manifest(SPEC)["metadata"]["name"]
    assert not first.finished and first.detail == f"{made.kind} ml/{first.job}"
