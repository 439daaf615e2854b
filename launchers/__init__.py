"""Thin absl entry points."""
