"""Scores, selectors and schedules that decide which masked positions to commit."""
