"""Runnable examples; start them from the repository root (`uvicorn examples.<name>.app:app`).
`_config.py` is how they all find their config (THANOS_CONFIG, else a thanos.toml beside each)."""
