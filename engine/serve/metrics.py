"""Prometheus metrics of the gateway, in their own CollectorRegistry: counts and latencies per tenant, model, adapter."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LABELS = ("tenant", "model", "adapter")
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    """One set of metrics per gateway (tests start several gateways in one process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("studio_requests", "Completed and failed inference requests", LABELS,
                                registry=r)
        self.errors = Counter("studio_request_errors", "Inference requests that failed", (*LABELS, "code"),
                              registry=r)
        self.prompt_tokens = Counter("studio_prompt_tokens", "Prompt tokens processed", LABELS, registry=r)
        self.completion_tokens = Counter("studio_completion_tokens", "Completion tokens generated", LABELS,
                                         registry=r)
        self.latency = Histogram("studio_request_latency_seconds", "Request latency (to the last byte)",
                                 LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("studio_time_to_first_token_seconds", "Streaming: time to the first token",
                              LABELS, buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("studio_requests_in_flight", "Inference requests being served", ("tenant",),
                               registry=r)
        self.adapters = Gauge("studio_adapters_loaded", "LoRA adapters loaded in the backend", registry=r)

    def observe(self, tenant: str, model: str, adapter: str, *, seconds: float, prompt_tokens: int,
                completion_tokens: int, error_code: str | None) -> None:
        labels = (tenant, model, adapter)
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)
        self.prompt_tokens.labels(*labels).inc(prompt_tokens)
        self.completion_tokens.labels(*labels).inc(completion_tokens)
        if error_code is not None:
            self.errors.labels(*labels, error_code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
