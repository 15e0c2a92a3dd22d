"""Signed webhooks to client platforms: outbox rows written after each terminal status change
(outbox.py), signed (signing.py) and sent through an outbound guard (guard.py) by delivery jobs
on their own queue (`webhooks`), run by their own worker (workers/webhooks.py), never inline in
an analysis worker, so a slow or dead endpoint cannot hold analysis up.

Nothing is wired by importing this package: each process subscribes an `Outbox` to its
lifecycle where it starts (app/__init__.py, workers/context.py).
"""
