"""GPU-only libraries (bitsandbytes): hidden from the ML libraries unless a job's config needs them.

peft imports bitsandbytes whenever it is installed (`peft.helpers` at import, and the LoRA layer
dispatch asks `is_bnb_available()`), and importing bitsandbytes on a CPU with AVX512-BF16 makes it
look up a kernel on the Hugging Face hub (the `kernels` package), which logs two warnings when
offline. A LoRA run, an eval or `studio --help` never use it; only QLoRA (`train.adapter: qlora`)
does. So the CLI entry calls `hide()` before any ML library is imported: a None entry in
sys.modules makes Python treat the package as not installed (`import` raises ImportError,
`importlib.util.find_spec` returns None), which is exactly what peft's and transformers'
availability checks ask. Nothing is uninstalled and no warning is filtered. `require(name)` (the
QLoRA path) removes the entry, clears those libraries' cached answers and imports the package.
"""

from __future__ import annotations

import sys
from types import ModuleType

# Installed libraries that only GPU features (QLoRA's 4/8-bit base) use.
GPU_ONLY = ("bitsandbytes",)

# Availability checks the ML libraries cache (functools.lru_cache): (module, function).
_CACHED_CHECKS = (
    ("transformers.utils.import_utils", "is_bitsandbytes_available"),
    ("peft.import_utils", "is_bnb_available"),
    ("peft.import_utils", "is_bnb_4bit_available"),
)


def hide(names: tuple[str, ...] = GPU_ONLY) -> None:
    """Make `names` look not installed to this process (a package already imported stays)."""
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def hidden(name: str) -> bool:
    return name in sys.modules and sys.modules[name] is None


def require(name: str) -> ModuleType:
    """Import `name` for real (undoing `hide`); ImportError when it is not installed."""
    if hidden(name):
        del sys.modules[name]
        for module, function in _CACHED_CHECKS:
            check = getattr(sys.modules.get(module), function, None)
            if check is not None and hasattr(check, "cache_clear"):
                check.cache_clear()
    __import__(name)  # the import statement's own hook (tests replace it to fake a missing package)
    return sys.modules[name]
