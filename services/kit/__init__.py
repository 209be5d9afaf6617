"""The Atrium service kit: what every Atrium process (portal and services) shares.

Settings, problem-details errors, request ids, JSON logs, health, metrics, JWT
authentication, the inter-service HTTP client and prefixed ids live here so that
no service copies them.
"""
