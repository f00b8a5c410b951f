"""The terminal progress bar of ``jobcast submit --wait``."""

from __future__ import annotations

from broker.terminal import BAR_WIDTH, render_bar


def test_bar_shows_state_fill_counts_eta_and_message() -> None:
    line = render_bar({"state": "running", "done": 3, "total": 6, "eta_s": 4.2, "message": "Summed May"})
    assert line.startswith("running")
    assert "[" + "#" * (BAR_WIDTH // 2) + "-" * (BAR_WIDTH // 2) + "]" in line
    assert "3/6" in line and "eta 4s" in line and line.endswith("Summed May")


def test_bar_without_a_total_is_empty_and_has_no_eta() -> None:
    line = render_bar({"state": "queued", "done": 0, "total": 0, "eta_s": None, "message": ""})
    assert "[" + "-" * BAR_WIDTH + "]" in line and "eta" not in line
