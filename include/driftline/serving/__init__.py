"""Serving: the logged model that loads without driftline installed, and the REST server that
answers with the current champion."""
