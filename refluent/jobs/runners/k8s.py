"""The Kubernetes runner: a ``batch/v1`` ``Job`` whose one pod runs ``refluent retrain`` on a GPU
node (see :mod:`~refluent.jobs.runners.kube` for the pod)."""

from __future__ import annotations

from typing import Any

from refluent.jobs.runners.base import JobSpec, retrain_args
from refluent.jobs.runners.kube import KubeRunner, container, job_name, labels, pod_template


class KubernetesJobRunner(KubeRunner):
    """Submits a job as a Kubernetes ``Job`` through the official client."""

    name, kind = "k8s", "Job"

    def manifest(self, spec: JobSpec) -> dict[str, Any]:
        s = self.settings.jobs
        main = container(s, "retrain", ["refluent", *retrain_args(spec)], s.gpus)
        return {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job_name(spec), "namespace": s.namespace,
                         "labels": labels(spec)},
            "spec": {"backoffLimit": s.backoff_limit,
                     "ttlSecondsAfterFinished": s.ttl_after_finished_s,
                     "template": pod_template(s, spec, main)},
        }

    def _create(self, kubernetes: Any, client: Any, manifest: dict[str, Any]) -> None:
        kubernetes.client.BatchV1Api(client).create_namespaced_job(
            namespace=self.settings.jobs.namespace, body=manifest)
