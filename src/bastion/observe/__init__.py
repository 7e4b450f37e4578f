"""Access log and operational logging (metrics and the dashboard arrive later)."""
