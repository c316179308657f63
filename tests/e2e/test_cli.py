"""The command line, as a user runs it: a real `refluent` process per command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from opacus.accountants import PRVAccountant
from typer.testing import CliRunner

from refluent.cli.app import app
from refluent.streams.contracts import CONTRACTS

EXAMPLE = Path(__file__).parents[2] / "refluent" / "examples" / "cdc_customers.jsonl"


def _cli(tmp_path: Path, *args: str, check: bool = True, stdin: str | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFLUENT_")}
    env["REFLUENT_EMBEDDED__STATE_DIR"] = str(tmp_path / "state")
    env["REFLUENT_CONFIG"] = os.environ["REFLUENT_CONFIG"]
    env["COLUMNS"] = "200"
    proc = subprocess.run([sys.executable, "-m", "refluent.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, input=stdin, cwd=tmp_path)
    if check and proc.returncode != 0:
        raise AssertionError(f"refluent {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command and group of the CLI, walked from the app itself (none can be missed)."""
    found = [list(path)]
    for name, sub in sorted(getattr(group, "commands", {}).items()):
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.unit
def test_help__the_walk_finds_the_nested_commands() -> None:
    assert len(COMMANDS) > 30
    assert ["lake", "query"] in COMMANDS and ["models", "promote"] in COMMANDS


@pytest.mark.unit
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "refluent")
def test_help__every_command_explains_itself(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    after_usage = result.output.split("Usage", 1)[1].splitlines()[1:]
    summary = next((line.strip() for line in after_usage if line.strip()), "")
    assert summary and not summary.startswith("╭"), \
        f"refluent {' '.join(command)} has no help text:\n{result.output}"
    if not command:
        assert "REFLUENT_KAFKA__BOOTSTRAP_SERVERS" in result.output


@pytest.mark.unit
def test_config_show__masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLUENT_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("REFLUENT_REDIS__URL", "redis://:redispw@db:6379/0")
    monkeypatch.setenv("REFLUENT_LAKE__PROPERTIES", '{"s3.secret-access-key": "s3pw"}')
    for args in (["config", "show", "--json"], ["config", "show"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        for secret in ("hunter2", "redispw", "s3pw"):
            assert secret not in result.output
    data = json.loads(CliRunner().invoke(app, ["config", "show", "--json"]).output)
    assert data["kafka"]["sasl_password"] == "**********"
    assert data["redis"]["url"] == "redis://:***@db:6379/0"
    assert data["lake"]["properties"] == {"s3.secret-access-key": "**********"}


@pytest.mark.unit
def test_schemas_export__writes_one_file_per_contract(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schemas", "export", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert "CdcEnvelope.v1.schema.json" in names and len(names) == len(CONTRACTS)
    schema = json.loads((tmp_path / "schemas" / "Feedback.v1.schema.json").read_text())
    assert schema["additionalProperties"] is False and "label" in schema["required"]


@pytest.mark.e2e
def test_without_services__commands_say_how_to_start_them(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "tail", "cdc.customers", check=False)
    assert proc.returncode == 1
    assert "refluent up" in proc.stderr and "REFLUENT_KAFKA__BOOTSTRAP_SERVERS" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_up_produce_tail_describe_down__round_trips_a_debezium_file(tmp_path: Path) -> None:
    _cli(tmp_path, "up")
    try:
        assert "created" in _cli(tmp_path, "topics", "create").stdout
        listed = _cli(tmp_path, "topics", "list").stdout
        assert "cdc.customers.dlq" in listed and "missing" not in listed
        out = _cli(tmp_path, "produce", "cdc.customers", "--file", str(EXAMPLE)).stdout
        assert "14 record(s) produced" in out and "3 bad line(s)" in out
        assert "cdc_customers.jsonl:13" in out

        lines = _cli(tmp_path, "tail", "cdc.customers", "--from-beginning", "--max", "14",
                     "--format", "jsonl", "--idle-timeout", "20").stdout.splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == 14
        ops = sorted(r["value"].get("op") or r["value"]["payload"]["op"] for r in records)
        assert ops == sorted("rrrrrcucudu" "cc" "u")
        assert {r["key"] for r in records} == {str(i) for i in range(1, 10)}

        dead = [json.loads(x) for x in _cli(
            tmp_path, "tail", "cdc.customers.dlq", "--from-beginning", "--max", "3",
            "--format", "jsonl", "--idle-timeout", "20").stdout.splitlines()]
        assert [d["headers"]["refluent.dlq.origin"] for d in dead] == [
            "cdc_customers.jsonl:10", "cdc_customers.jsonl:13", "cdc_customers.jsonl:17"]
        assert {d["headers"]["refluent.dlq.step"] for d in dead} == {"produce"}

        # stdin works too, and --strict refuses a file with a bad line before producing.
        good = EXAMPLE.read_text().splitlines()[0]
        _cli(tmp_path, "produce", "cdc.customers", "--file", "-", stdin=good + "\n")
        strict = _cli(tmp_path, "produce", "cdc.customers", "--file", str(EXAMPLE), "--strict",
                      check=False)
        assert strict.returncode == 1 and "nothing produced" in strict.stderr

        described = _cli(tmp_path, "topics", "describe", "cdc.customers").stdout
        assert "retention.ms" in described
        status = _cli(tmp_path, "status").stdout
        assert status.count("│ up ") == 3, status
    finally:
        down = _cli(tmp_path, "down")
    assert "broker" in down.stdout and "stopped" in down.stdout
    state = tmp_path / "state"
    assert not (state / "services.json").exists()
    assert _cli(tmp_path, "status", check=False).returncode == 3


@pytest.mark.e2e
def test_demo__round_trips_and_stops_everything(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "demo", timeout=400)
    assert "round trip complete: 17 lines in = 14 read back + 3 dead letters" in proc.stdout
    # The wrapped records' logical types were decoded (base64 Decimal -> 1250.75).
    assert "credit_limit=1250.75" in proc.stdout
    # The loop: every request answered, every label joined and learned from.
    assert "600 predictions on the predictions topic" in proc.stdout
    assert "600 labels joined, 600 examples produced, 0 dead-lettered" in proc.stdout
    assert "600 examples learned" in proc.stdout
    # drift of basket_value, of the score and of the error; estimated and realised accuracy;
    # the promotion of the model registered earlier in the demo
    assert "6 webhook(s) received and verified, 0 refused" in proc.stdout
    assert "signature verified, performance.degraded for basket-converts v1: performance (cbpe" \
        in proc.stdout
    assert "the estimated accuracy (cbpe) saw the fall 40 s (event time) before the labels" \
        in proc.stdout
    assert "signature verified, drift.detected for basket-converts v1: basket_value" in (
        " ".join(proc.stdout.split()))
    # The drift asks for one DP retrain; its challenger learned the new rule, is promoted in
    # shadow, and the ledger holds what it spent.
    out = " ".join(proc.stdout.split())
    assert "6 alerts read, 1 retrain request(s) on retrain.requests" in out
    made = re.search(r"basket-converts v2 registered as challenger-dp: \d+ rows, \d+ DP-SGD "
                     r"steps at noise [\d.]+, validation accuracy ([\d.]+), epsilon ([\d.]+)",
                     out)
    assert made is not None, out[-3000:]
    accuracy, epsilon = float(made[1]), made[2]
    assert accuracy > 0.85  # a band of basket values: the River champion cannot draw it
    assert float(epsilon) <= 2.0 + 1e-3  # retrain.target_epsilon
    assert f"basket-converts v2 (DP-SGD, epsilon {epsilon}) promoted to champion" in out
    # The new champion keeps learning under DP: each update charged to the same ledger, whose
    # total is Opacus' own PRV accountant over the runs it lists.
    updates = re.search(r"2500 more labels of v2: (\d+) DP update\(s\) of 1024\+ labels", out)
    assert updates is not None and int(updates[1]) >= 2, out[-3000:]
    runs = re.findall(r"ledger \d+: (retrain|update) noise ([\d.]+), sample rate ([\d.]+), "
                      r"(\d+) steps: epsilon ([\d.]+)", out)
    assert [r[0] for r in runs] == ["retrain"] + ["update"] * int(updates[1])
    assert runs[0][4] == epsilon
    accountant = PRVAccountant()
    accountant.history = [(float(s), float(q), int(n)) for _, s, q, n, _ in runs]
    total = re.search(r"privacy ledger of basket-converts: epsilon ([\d.]+) of 10 spent", out)
    assert total is not None and total[1] == runs[-1][4]
    assert float(total[1]) == pytest.approx(accountant.get_epsilon(1e-5), abs=2e-3)
    assert float(total[1]) > float(epsilon)
    assert "broker" in proc.stdout and "stopped" in proc.stdout
    assert _cli(tmp_path, "status", check=False).returncode == 3


@pytest.mark.unit
def test_process__an_unknown_engine_is_refused_before_any_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from refluent.engines.errors import UnknownEngineError

    monkeypatch.setenv("REFLUENT_PROCESSING__ENGINE", "spark")
    monkeypatch.setenv("REFLUENT_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens
    result = CliRunner().invoke(app, ["process", "--views", "refluent.examples.views"])
    assert isinstance(result.exception, UnknownEngineError), result.output
    assert "unknown engine 'spark': known engines are faust" in str(result.exception)
