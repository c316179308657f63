"""The processes of one job: this process alone, or the ones ``torchrun`` started.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the group joins the ``torch.distributed`` process group
(NCCL on GPUs, gloo on CPUs). Whatever must happen once (pinning the training set, charging the
ledger, registering the version) runs on the first process only, through
:meth:`JobGroup.first_says`, and every process gets its answer, or fails with its error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from refluent.jobs.errors import JobError

T = TypeVar("T")


class JobGroup:
    """See the module. Use as a context manager: it leaves the process group it joined."""

    def __init__(self) -> None:
        self._joined = False
        dist = torch.distributed
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            self._joined = True
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.size = dist.get_world_size() if self.distributed else 1

    @property
    def first(self) -> bool:
        return self.rank == 0

    def first_says(self, work: Callable[[], T]) -> T:
        """``work()`` run on the first process, its result on every process.

        Raises:
            Exception: on the first process, what ``work`` raised.
            JobError: on the others, naming what the first one raised.
        """
        if not self.distributed:
            return work()
        box: list[Any] = [None]
        error: BaseException | None = None
        if self.first:
            try:
                box = [("ok", work())]
            except Exception as exc:  # every process must hear of it, then it is re-raised
                error, box = exc, [("error", f"{type(exc).__name__}: {exc}")]
        torch.distributed.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise JobError(f"the job's first process failed: {value}")
        return value

    def __enter__(self) -> JobGroup:
        return self

    def __exit__(self, *_: Any) -> None:
        if self._joined:
            torch.distributed.destroy_process_group()


__all__ = ["JobGroup"]
