"""Renderers: each formats what it is given and computes nothing."""
