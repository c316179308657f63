"""The demo's feature views: customer state from CDC, order and app-activity aggregates.

Run them with ``refluent process --views refluent/examples/views.py`` (or the dotted name
``refluent.examples.views``).
"""

from __future__ import annotations

from datetime import timedelta

from refluent.processors.aggregations import Aggregation
from refluent.processors.features import EntityStateView, FeatureView, only_ops
from refluent.processors.windows import Hopping, Sliding, Tumbling

HOUR = timedelta(hours=1)

customers = EntityStateView(
    name="customers",
    source="cdc.customers",
    columns=("tier", "country", "credit_limit"),
    description="Latest profile of each customer.",
)

customer_orders = FeatureView(
    name="customer_orders",
    entity="customer_id",
    sources=("cdc.orders",),
    aggregations=(
        Aggregation("orders_1h", "count", None, Tumbling(HOUR, grace=timedelta(minutes=5))),
        Aggregation("spend_1h", "sum", "amount", Tumbling(HOUR, grace=timedelta(minutes=5))),
        Aggregation("avg_order_2h", "mean", "amount", Hopping(2 * HOUR, timedelta(minutes=30))),
        Aggregation("max_order_30m", "max", "amount", Sliding(timedelta(minutes=30))),
        Aggregation("channels_1h", "approx_distinct", "channel", Tumbling(HOUR)),
    ),
    transforms=(only_ops("c", "r"),),
    ttl=timedelta(days=2),
    description="Order counts and spend per customer (new orders only).",
)

app_activity = FeatureView(
    name="app_activity",
    entity="entity_id",
    sources=("logs.app",),
    aggregations=(
        Aggregation("views_1h", "count", None, Tumbling(HOUR)),
        Aggregation("pages_1h", "approx_distinct", "page", Tumbling(HOUR)),
        Aggregation("last_page", "last", "page", Tumbling(HOUR)),
        Aggregation("p_latency_10m", "mean", "latency_ms", Sliding(timedelta(minutes=10))),
    ),
    description="What each user does in the app.",
)
