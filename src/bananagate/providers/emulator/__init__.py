"""The built-in offline emulator provider (deterministic images, on-demand faults)."""

from bananagate.providers.emulator.provider import EmulatorProvider

__all__ = ["EmulatorProvider"]
