"""The peer of ``bench/engines_peer.py``: a Quix Streams application over the same log events,
a tumbling window per entity (count, mean and max of ``attributes.amount``), changelog on, each
window's current value produced per event (as Refluent's engines publish one update per event).

It runs in its own environment (``quixstreams`` pins its own client libraries):

    python bench/peers/quix_app.py --bootstrap HOST:PORT --input TOPIC --output TOPIC \\
        --group GROUP --state-dir DIR [--window-s 3600]

The embedded broker answers DescribeConfigs without ``retention.ms``, which Quix Streams reads
to copy the input topic's retention to its changelog and repartition topics; here that lookup
falls back to Kafka's default retention (7 days) when the broker does not say. Against Kafka
the patch changes nothing.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from typing import Any

DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)


def _patch_retention() -> None:
    from quixstreams.models.topics.manager import TopicManager

    derive = TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive_with_default(cls: Any, topics: Any) -> Any:
        for topic in topics:
            topic.broker_config.extra_config.setdefault("retention.ms", DEFAULT_RETENTION_MS)
        return derive(cls, topics)

    TopicManager.derive_topic_config = classmethod(derive_with_default)  # type: ignore[assignment]


def event_ms(value: Any, headers: Any, timestamp: float, kind: Any) -> int:
    """The event's own time (``ts``), as Refluent's engines window by it."""
    return int(datetime.fromisoformat(value["ts"].replace("Z", "+00:00")).timestamp() * 1000)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--window-s", type=int, default=3600)
    args = ap.parse_args()
    _patch_retention()
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Max, Mean

    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset="earliest", processing_guarantee="at-least-once",
                      state_dir=args.state_dir, use_changelog_topics=True, loglevel="WARNING")
    source = app.topic(args.input, value_deserializer="json", timestamp_extractor=event_ms)
    out = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(lambda v: {"amount": v["attributes"]["amount"]})
    sdf = (sdf.tumbling_window(timedelta(seconds=args.window_s))
           .agg(count=Count(), mean=Mean("amount"), max=Max("amount")).current())
    sdf.to_topic(out)
    app.run()


if __name__ == "__main__":
    main()
