"""The end-to-end demo on the embedded services (``refluent demo``): steps 2-6 are
:mod:`refluent.demo.features`, steps 7-9 :mod:`refluent.demo.loop`, step 10
:mod:`refluent.demo.drift`, step 11 :mod:`refluent.demo.retrain`.

1. start the broker, Redis and the lake catalog;
2. create the catalog's topics;
3. produce sample Debezium changes (customers, orders; a few bad lines) and app logs;
4. read the changes and the dead letters back;
5. run the example feature views on the engine;
6. land everything in the lake and the features in the online store; show online features
   and query the lake;
7. serve a River model over Kafka and HTTP;
8. produce delayed labels: the feedback service joins them and the model learns;
9. land predictions and examples in the lake;
10. the stream changes: the monitor raises drift alerts, delivered as signed webhooks to a
    receiver that verifies them (:mod:`refluent.demo.drift`);
11. the drift alerts trigger a DP-SGD retrain; the challenger is registered with its epsilon,
    shadow-scored beside the champion and promoted (:mod:`refluent.demo.retrain`);
12. stop everything.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from refluent.config import Settings
from refluent.demo import drift, features, loop, retrain
from refluent.embedded import services

NAMESPACE = "demo"
"""Lake namespace of the demo's tables, emptied at each run: the embedded broker starts with
empty topics, so tables kept from an earlier run would hold offsets past their ends."""


def run_demo(settings: Settings, console: Console, keep: bool = False) -> dict[str, Any]:
    """Run the demo; returns the counts it showed, so tests can check them."""
    settings = settings.model_copy(
        update={"lake": settings.lake.model_copy(update={"namespace": NAMESPACE})})
    console.rule("[bold]1. start the embedded services")
    services.up(settings, on_step=lambda name, msg: console.print(f"[green]✓[/] {name}: {msg}"))
    try:
        features.empty_namespace(settings)
        counts: dict[str, Any] = features.produce_and_read_back(settings, console)
        counts.update(features.features(settings, console))
        counts.update(loop.serve_and_learn(settings, console))
        counts.update(drift.drift_and_webhook(settings, console))
        counts.update(retrain.retrain_and_promote(settings, console))
        return counts
    finally:
        if keep:
            console.print("services left running; stop them with `refluent down`")
        else:
            console.rule("[bold]12. stop the services")
            for name, pid, ok in services.down(settings):
                console.print(f"{'[green]✓[/]' if ok else '[red]✗[/]'} {name} (pid {pid}) stopped")
