"""Seams to external libraries at the versions pinned in constraints.txt."""
