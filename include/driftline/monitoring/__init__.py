"""Monitoring: predictions ahead, judged rows, drift reports, history and the drift rule."""
