"""The Kubeflow runner: a Training Operator ``PyTorchJob`` (``kubeflow.org/v1``) for DDP across
GPUs and pods.

A master and ``jobs.workers`` workers each run ``torchrun`` with one process per GPU
(``nprocPerNode``); the operator gives every pod the rendezvous (``PET_*``) ``torchrun`` reads.
Every process trains its shard under Opacus' DP-DDP; the first charges the ledger and registers
the version.
"""

from __future__ import annotations

from typing import Any

from refluent.jobs.runners.base import JobSpec, retrain_args
from refluent.jobs.runners.kube import KubeRunner, container, job_name, labels, pod_template

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"


class KubeflowRunner(KubeRunner):
    """Submits a job as a Kubeflow ``PyTorchJob`` through the official client."""

    name, kind = "kubeflow", "PyTorchJob"

    def manifest(self, spec: JobSpec) -> dict[str, Any]:
        s = self.settings.jobs
        command = ["torchrun", "-m", "refluent.cli", *retrain_args(spec)]
        # The operator requires the container to be named "pytorch".
        template = pod_template(s, spec, container(s, "pytorch", command, s.gpus),
                                restart="Never")
        replicas: dict[str, Any] = {
            "Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
        if s.workers:
            replicas["Worker"] = {"replicas": s.workers, "restartPolicy": "Never",
                                  "template": template}
        return {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "PyTorchJob",
            "metadata": {"name": job_name(spec), "namespace": s.namespace,
                         "labels": labels(spec)},
            "spec": {"runPolicy": {"backoffLimit": s.backoff_limit,
                                   "ttlSecondsAfterFinished": s.ttl_after_finished_s,
                                   "cleanPodPolicy": "None"},
                     "nprocPerNode": str(max(s.gpus, 1)),
                     "pytorchReplicaSpecs": replicas},
        }

    def _create(self, kubernetes: Any, client: Any, manifest: dict[str, Any]) -> None:
        kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
            GROUP, VERSION, self.settings.jobs.namespace, PLURAL, manifest)
