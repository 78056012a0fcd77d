"""The airlock's web service: REST API and checker pages (tornado, hub OAuth)."""
