"""What the Kubernetes runners share: names, labels, the pod template, and the API client.

A job's pods run the project's image with the ``jobs`` settings' requests (``nvidia.com/gpu``
when ``jobs.gpus`` > 0, with the toleration GPU nodes are usually tainted with), take their
``REFLUENT_*`` settings from ``jobs.config_map`` and ``jobs.secret``, and never restart in place:
a retry is a new pod under the same run id, which the ledger charges once.
"""

from __future__ import annotations

import os
import re
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from refluent.errors import require
from refluent.jobs.errors import JobError
from refluent.jobs.runners.base import JobSpec, Launched, Runner

if TYPE_CHECKING:
    from refluent.config import JobSettings

GPU = "nvidia.com/gpu"
_NAME_LEN = 63


def job_name(spec: JobSpec) -> str:
    """A DNS-1123 name from the model and the run id (the same spec gives the same name).

    Examples:
        >>> job_name(JobSpec("Churn_Model", "4f1c2a9e7b3d4e5f"))
        'retrain-churn-model-4f1c2a9e7b3d'
    """
    model = re.sub(r"[^a-z0-9-]+", "-", spec.model.lower()).strip("-") or "model"
    run = re.sub(r"[^a-z0-9]+", "", spec.run_id.lower())[:12] or "run"
    return f"retrain-{model[:_NAME_LEN - len(run) - 9].strip('-')}-{run}"


def labels(spec: JobSpec) -> dict[str, str]:
    """Labels of the job and its pods (values cut to the 63 characters Kubernetes allows)."""
    def value(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:_NAME_LEN].strip("-._") or "x"

    return {"app.kubernetes.io/name": "refluent", "app.kubernetes.io/component": "retrain",
            "refluent.io/model": value(spec.model), "refluent.io/run-id": value(spec.run_id)}


def container(settings: JobSettings, name: str, command: list[str], gpus: int
              ) -> dict[str, Any]:
    """The job's container: image, command, environment and resources."""
    requests: dict[str, Any] = {"cpu": settings.cpu, "memory": settings.memory}
    limits: dict[str, Any] = {"memory": settings.memory}
    if gpus:
        requests[GPU] = limits[GPU] = str(gpus)  # a quantity, as the API writes it
    env_from: list[dict[str, Any]] = []
    if settings.config_map:
        env_from.append({"configMapRef": {"name": settings.config_map}})
    if settings.secret:
        env_from.append({"secretRef": {"name": settings.secret}})
    out: dict[str, Any] = {"name": name, "image": settings.image, "command": command,
                           "resources": {"requests": requests, "limits": limits}}
    if env_from:
        out["envFrom"] = env_from
    return out


def pod_template(settings: JobSettings, spec: JobSpec, main: dict[str, Any],
                 restart: str = "Never") -> dict[str, Any]:
    """A pod template running ``main`` (see the module)."""
    pod: dict[str, Any] = {"restartPolicy": restart, "containers": [main]}
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    if settings.gpus:
        pod["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return {"metadata": {"labels": labels(spec)}, "spec": pod}


def api_client(settings: JobSettings) -> Any:
    """A Kubernetes API client: the in-cluster configuration inside a pod, else the
    kubeconfig (``jobs.kube_context`` or its current context).

    Raises:
        JobError: no cluster is configured.
    """
    kubernetes: Any = require("kubernetes", "jobs")
    config = kubernetes.client.Configuration()  # this client's own, not the global default
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        try:
            # KUBECONFIG read now: the client reads it once, when it is imported.
            kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                               context=settings.kube_context,
                                               client_configuration=config)
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise JobError(f"no Kubernetes cluster configured (in-cluster or kubeconfig): "
                           f"{exc}; use --dry-run to print the manifest") from exc
    return kubernetes.client.ApiClient(config)


def to_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as YAML, keys in the order written."""
    yaml: Any = require("yaml", "jobs")
    return str(yaml.safe_dump(manifest, sort_keys=False))


class KubeRunner(Runner):
    """A runner that submits one manifest through the official client; submitting a job
    whose name exists (the API's 409) is taken as already started."""

    kind: str

    @abstractmethod
    def manifest(self, spec: JobSpec) -> dict[str, Any]:
        """The object to create."""

    @abstractmethod
    def _create(self, kubernetes: Any, client: Any, manifest: dict[str, Any]) -> None:
        """Create ``manifest`` with the API client ``client``."""

    def render(self, spec: JobSpec) -> str:
        return to_yaml(self.manifest(spec))

    def launch(self, spec: JobSpec) -> Launched:
        kubernetes: Any = require("kubernetes", "jobs")
        manifest, s = self.manifest(spec), self.settings.jobs
        try:
            self._create(kubernetes, api_client(s), manifest)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:  # Conflict: a job of that name exists
                raise
        name = manifest["metadata"]["name"]
        return Launched(self.name, name, False, detail=f"{self.kind} {s.namespace}/{name}")
