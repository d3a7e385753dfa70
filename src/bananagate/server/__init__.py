"""The ASGI gateway: routes, auth, errors, request ids and access logs."""

from bananagate.server.app import create_app

__all__ = ["create_app"]
