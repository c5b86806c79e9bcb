"""Measurements of the service against the alternatives a user would pick instead."""
