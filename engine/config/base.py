"""The one strict pydantic base of every config section: unknown keys are errors, defaults validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every config model: an unknown key is an error, and defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
