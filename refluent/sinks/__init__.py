"""Every side effect: the online store (Redis), the lake (Iceberg), Kafka, webhooks."""
