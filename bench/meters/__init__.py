"""Per-rank measurement: step latency and memory."""
