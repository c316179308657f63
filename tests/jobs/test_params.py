"""A retrain request's parameters: applied as the retrain settings they name, refused by name
when they are not one or do not fit, carried to the job's command line unchanged, and checked
by the launcher before any job starts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from refluent.config import RetrainSettings, Settings
from refluent.jobs import outcomes
from refluent.jobs.errors import JobError
from refluent.jobs.params import parse_param, with_params
from refluent.jobs.runners import JobSpec
from refluent.jobs.runners.base import Launched, Runner, retrain_args
from refluent.jobs.service import LauncherService
from refluent.streams.contracts import RetrainRequest

pytestmark = pytest.mark.unit

PARAMS: dict[str, Any] = {"epochs": 3, "retrain.target_epsilon": 0.5, "quantize": True,
                          "alias": "challenger-b", "hidden": "[16, 8]", "noise_multiplier": None,
                          "feature_scales": '{"basket_value": [130, 30]}'}


def test_with_params__sets_each_named_setting_and_nothing_else() -> None:
    base = Settings()
    s = with_params(base, PARAMS)
    r = s.retrain
    assert (r.epochs, r.target_epsilon, r.quantize, r.alias, r.hidden, r.noise_multiplier,
            r.feature_scales) == (3, 0.5, True, "challenger-b", [16, 8], None,
                                  {"basket_value": (130.0, 30.0)})
    untouched = set(RetrainSettings.model_fields) - {k.removeprefix("retrain.") for k in PARAMS}
    assert untouched and all(getattr(r, k) == getattr(base.retrain, k) for k in untouched)
    assert s.privacy == base.privacy and with_params(base, {}) is base


@pytest.mark.parametrize(("params", "message"), [
    ({"epoch": 3}, "retrain parameter 'epoch' is not a retrain setting (known: alias, "),
    ({"privacy.epsilon_budget": 99}, "'privacy.epsilon_budget' is not a retrain setting"),
    ({"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
    ({"grad_sample_mode": "fast"}, "grad_sample_mode: Input should be 'ghost' or 'hooks'"),
    ({"hidden": "[16,"}, "retrain parameter 'hidden': '[16,' is not JSON"),
])
def test_with_params__refuses_what_is_not_a_retrain_setting_by_name(
        params: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError, match=message.replace("(", r"\(").replace("[", r"\[")):
        with_params(Settings(), params)


def test_params__reach_the_job_s_command_line_as_they_were_asked() -> None:
    spec = JobSpec("churn", "r1", params=tuple(sorted(PARAMS.items())))
    args = retrain_args(spec)
    given = [args[i + 1] for i, a in enumerate(args) if a == "--param"]
    assert dict(parse_param(p) for p in given) == PARAMS


class _Recorder(Runner):
    name = "recorder"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.specs: list[JobSpec] = []

    def render(self, spec: JobSpec) -> str:
        return spec.run_id

    def launch(self, spec: JobSpec) -> Launched:
        self.specs.append(spec)
        return Launched(self.name, spec.run_id, finished=True, ok=True, exit_code=0)


def test_launcher__refuses_bad_params_before_any_job_and_reports_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(outcomes, "report", lambda s, alert, topic="alerts": reported.append(
        (alert, topic)) or True)
    runner = _Recorder(Settings())
    launcher = LauncherService(Settings(), "127.0.0.1:1", runner=runner)
    now = datetime.now(UTC)
    bad = RetrainRequest(request_id="bad", model_name="churn", reason="manual",
                         requested_at=now, params={"epochs": -1})
    good = RetrainRequest(request_id="good", model_name="churn", reason="manual",
                          requested_at=now, params={"epochs": 2})
    for request in (bad, good, bad):
        launcher.launch(request)
    assert [(s.run_id, s.params) for s in runner.specs] == [("good", (("epochs", 2),))]
    ((alert, topic),) = reported
    assert (alert.event, alert.alert_id, topic) == ("retrain.failed", "bad:retrain.failed",
                                                    "alerts")
    assert "epochs: Input should be greater than or equal to 1" in alert.window["error"]
    assert launcher.stats.failed == 1 and launcher.stats.skipped == 1
