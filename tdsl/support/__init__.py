"""Helpers below every stage (file writes that survive a crash), imported by any layer."""
