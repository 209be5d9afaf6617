"""Payments data. Payment orders and screening rules arrive with the payments issue."""
