"""The worldreel service: an OpenAI-compatible Videos API (``app.py``) over a durable SQLite
job queue (``queue.py``), worker processes that generate (``worker.py``), keys and request
limits (``auth.py``) and the web studio (``static/``). See docs/serve.md."""
