"""Webhook deliveries of alerts: subscribers, URL policy, Standard Webhooks signing and retries,
the durable outbox (Redis) and the dispatcher."""
