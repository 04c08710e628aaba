"""Training: the request, the DVC pipeline and workspace, the model, its gate and registry."""
