"""Listeners, workers, signals, graceful reload and shutdown."""
