"""Shepherd: a Kubernetes release operator."""
