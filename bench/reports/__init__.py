"""Self-contained HTML reports (tables + matplotlib figures embedded as PNG)."""
