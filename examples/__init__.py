"""Runnable examples; start them from the repository root (`uvicorn examples.<name>.app:app`)."""
