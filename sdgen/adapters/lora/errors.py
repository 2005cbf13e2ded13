"""The one error every LoRA problem raises."""

from __future__ import annotations

from ...errors import UsageError


class LoraError(UsageError):
    """A LoRA cannot be used: not found, unreadable, unsafe, not a LoRA, for another model
    family or size, holding NaN, or with module names sdgen does not know. The message is
    one line and names the file."""
