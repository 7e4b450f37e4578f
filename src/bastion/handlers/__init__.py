"""Route actions answered by the gateway itself: static files, redirects, fixed responses."""
