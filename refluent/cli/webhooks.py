"""``refluent webhooks``: subscribers, test deliveries, dead letters and the dispatcher.

Subscribers added here are kept in Redis (``redis.url``, else the embedded one) beside those of
``webhooks.subscribers`` in the settings. Secrets are never printed, except a secret this
command generated, once, when the subscriber is added.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from refluent.webhooks.redis import RedisOutbox

console = Console()

webhooks_app = typer.Typer(help="Webhook subscribers, test deliveries, dead letters and the "
                                "dispatcher.", no_args_is_help=True)

SubscriberArg = Annotated[str, typer.Argument(help="Subscriber id (see: refluent webhooks list).")]


@contextmanager
def _outbox() -> Iterator[RedisOutbox]:
    from refluent.cli.app import settings
    from refluent.webhooks.redis import RedisOutbox

    outbox = RedisOutbox.from_settings(settings())
    try:
        yield outbox
    finally:
        outbox.close()


@webhooks_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="Endpoint (http or https).")],
    events: Annotated[list[str] | None, typer.Option(
        "--event", "-e", help="Event type to receive (repeat; default: all).")] = None,
    secret: Annotated[str | None, typer.Option(
        help="Signing secret (whsec_...); a new one is generated and shown once if empty.")
    ] = None,
) -> None:
    """Add a subscriber (or update the one at the same URL)."""
    from refluent.cli.app import settings
    from refluent.webhooks.base import Subscriber, check_secret, new_secret, subscriber_id
    from refluent.webhooks.events import check_events
    from refluent.webhooks.urls import check_url

    s = settings()
    check_url(url, s.webhooks.allow_networks)
    wanted = check_events(events or [])
    generated = secret is None
    key = new_secret() if secret is None else check_secret(secret)
    sub = Subscriber(subscriber_id(url), url, wanted, key)
    with _outbox() as outbox:
        outbox.put_subscriber(sub)
    console.print(Text(f"added {sub.id} -> {url} ({', '.join(wanted)})"))
    if generated:
        console.print(Text(f"signing secret (shown once; give it to the receiver): {key}"))


@webhooks_app.command("list")
def list_() -> None:
    """Subscribers, their events, pending deliveries and dead letters (secrets hidden)."""
    from refluent.cli.app import settings
    from refluent.webhooks.dispatcher import all_subscribers

    with _outbox() as outbox:
        subs = all_subscribers(settings(), outbox)
        dead = outbox.dead_letters()
        table = Table("id", "url", "events", "from", "pending", "dead", "state")
        for sub in sorted(subs, key=lambda x: x.id):
            table.add_row(sub.id, Text(sub.url), ", ".join(sub.events), sub.origin,
                          str(outbox.pending(sub.id)),
                          str(sum(1 for d in dead if d.subscriber_id == sub.id)),
                          Text(f"disabled: {sub.disabled}" if sub.disabled else "active"))
    console.print(table)


@webhooks_app.command("remove")
def remove(subscriber: SubscriberArg) -> None:
    """Remove a subscriber added with ``add`` and its pending deliveries."""
    from refluent.webhooks.errors import UnknownSubscriberError

    with _outbox() as outbox:
        if not outbox.remove_subscriber(subscriber):
            raise UnknownSubscriberError(subscriber)
    console.print(f"removed {subscriber}")


@webhooks_app.command("enable")
def enable(subscriber: SubscriberArg) -> None:
    """Deliver again to a subscriber disabled by a 410 Gone (then ``replay`` its dead letters)."""
    from refluent.cli.app import settings
    from refluent.webhooks.dispatcher import all_subscribers
    from refluent.webhooks.errors import UnknownSubscriberError

    with _outbox() as outbox:
        if subscriber not in {x.id for x in all_subscribers(settings(), outbox)}:
            raise UnknownSubscriberError(subscriber)
        was = outbox.enable(subscriber)
    console.print(f"enabled {subscriber}" if was else f"{subscriber} was not disabled")


@webhooks_app.command("test")
def test(subscriber: SubscriberArg) -> None:
    """Send a signed ``webhook.test`` message to one subscriber now and show the answer."""
    import uuid

    from refluent.cli.app import settings
    from refluent.webhooks.delivery import WebhookSender
    from refluent.webhooks.dispatcher import all_subscribers
    from refluent.webhooks.errors import UnknownSubscriberError
    from refluent.webhooks.events import TEST_EVENT, message

    s = settings()
    with _outbox() as outbox:
        subs = {x.id: x for x in all_subscribers(s, outbox)}
    if subscriber not in subs:
        raise UnknownSubscriberError(subscriber)
    now = datetime.now(UTC)
    msg = message(f"test_{uuid.uuid4().hex}", TEST_EVENT, now, {"subscriber": subscriber})
    sender = WebhookSender(s.webhooks)
    try:
        attempt = sender.send(subs[subscriber], msg, now)
    finally:
        sender.close()
    if not attempt.ok:
        console.print(Text(f"{subscriber}: failed: {attempt.error}"))
        raise typer.Exit(1)
    console.print(f"{subscriber}: delivered {msg.id} (HTTP {attempt.status})")


@webhooks_app.command("dead-letters")
def dead_letters(subscriber: Annotated[str | None, typer.Option(
        help="Only this subscriber's.")] = None) -> None:
    """Deliveries that failed their last attempt."""
    with _outbox() as outbox:
        rows = outbox.dead_letters(subscriber)
    table = Table("subscriber", "message", "type", "attempts", "when", "error")
    for d in rows:
        table.add_row(d.subscriber_id, d.message_id, d.message_type, str(d.attempts),
                      d.at.strftime("%Y-%m-%d %H:%M:%S"), Text(d.error[:120]))
    console.print(table)


@webhooks_app.command("replay")
def replay(
    subscriber: Annotated[str | None, typer.Option(help="Only this subscriber's.")] = None,
    message_ids: Annotated[list[str] | None, typer.Option(
        "--message", help="Only these messages (repeat).")] = None,
) -> None:
    """Make dead letters pending again; the dispatcher sends them (same webhook-id)."""
    with _outbox() as outbox:
        n = outbox.replay(datetime.now(UTC), subscriber, message_ids)
    console.print(f"replaying {n} deliveries")


@webhooks_app.command("dispatch")
def dispatch(
    idle_timeout: Annotated[float | None, typer.Option(
        help="Stop after this many seconds without an alert.")] = None,
    topic: Annotated[str, typer.Option(help="Topic of the alerts.")] = "alerts",
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port (0: off).")] = 0,
) -> None:
    """Deliver alerts to subscribers until stopped (SIGTERM/Ctrl-C)."""
    from dataclasses import replace

    from refluent.cli.app import settings
    from refluent.embedded.services import resolve_bootstrap
    from refluent.observability.metrics import serve_metrics
    from refluent.streams.kafka import TopicAdmin
    from refluent.streams.topics import ALERTS, TopicCatalog
    from refluent.webhooks.dispatcher import WebhookDispatcher

    s = settings()
    bootstrap = resolve_bootstrap(s)
    catalog = TopicCatalog.from_settings(s.topics)
    TopicAdmin(s.kafka, bootstrap).ensure([replace(catalog.get(ALERTS), name=topic),
                                           replace(catalog.get(ALERTS + ".dlq"),
                                                   name=topic + ".dlq")])
    if metrics_port:
        serve_metrics(metrics_port)
    with _outbox() as outbox:
        dispatcher = WebhookDispatcher(s, bootstrap, outbox, alerts_topic=topic)
        console.print(f"delivering {topic} on {bootstrap} to "
                      f"{len(dispatcher.subscribers())} subscribers")
        dispatcher.run(idle_timeout=idle_timeout)
    st = dispatcher.stats
    console.print(f"alerts {st.alerts}, delivered {st.delivered}, retried {st.retried}, "
                  f"dead {st.dead}")
