"""bananagate: a gateway, offline emulator, SDK and CLI for Gemini image models."""

__version__ = "0.1.0"
