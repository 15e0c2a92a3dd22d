"""Polling with a deadline, for tests that watch real processes."""

from __future__ import annotations

import time


def wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    """Call `pred` until it returns something truthy (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
