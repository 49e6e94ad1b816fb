"""The benchmark harness runs standalone (self-started tiny gateway) and reports consistent numbers."""

from __future__ import annotations

from engine.serve.bench import BenchOptions, run_bench, summarize, _Sample


def test_bench_self_started_reports_every_scenario():
    opts = BenchOptions(concurrency=2, requests=4, prompt_words=4, max_tokens=4, warmup=1,
                        client_process=False)
    report = run_bench(opts)
    names = [s["scenario"] for s in report["scenarios"]]
    assert names == ["gateway base", "direct base", "gateway lora", "direct lora"]
    for s in report["scenarios"]:
        assert s["errors"] == 0 and s["requests"] == 4
        assert 0 < s["completion_tokens"] <= 16 and s["tokens_per_s"] > 0
        assert s["ttft_ms_p50"] <= s["ttft_ms_p99"] and s["e2e_ms_p50"] >= s["ttft_ms_p50"]
    assert report["ratios"]["gateway_vs_direct_tokens_per_s"] > 0
    assert report["ratios"]["lora_vs_base_tokens_per_s"] > 0


def test_percentiles_and_error_rate():
    samples = [_Sample(ok=True, start=0.0, first=0.01 * i, end=0.1 * i, gaps=[0.001 * i], tokens=10)
               for i in range(1, 101)] + [_Sample(ok=False, start=0.0)] * 25
    s = summarize("x", samples, wall=2.0)
    assert s["requests"] == 125 and s["errors"] == 25 and s["error_rate"] == 0.2
    assert s["completion_tokens"] == 1000 and s["tokens_per_s"] == 500.0
    assert s["ttft_ms_p50"] == 505.0 and s["ttft_ms_p99"] == 990.1 and s["itl_ms_p95"] == 95.05
