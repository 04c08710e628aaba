"""The operator's side of the platform: what it is told (alerts) and what it does by hand."""
