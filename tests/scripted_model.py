"""A deterministic stand-in model for the refine's LLM stages: it answers each prompt from the
prompt alone (never from its batch), with Q/A pairs, safe or empty rewrites, preference answers
and judge scores spread over 1-5, so the stages' paths that a random tiny model never takes
(pairs, rewrites) run through a whole refine. It takes TransformersBackend's arguments, so
datatrove tasks can construct it too (refine_datatrove.TASK_BACKEND)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from engine.data.stages.llm.extract_qa import SYSTEM as EXTRACT_SYSTEM
from engine.data.stages.llm.rewrite import SYSTEM as REWRITE_SYSTEM
from engine.grading.rubric import WHY


class ScriptedModel:
    """A deterministic model for the pair and rewrite paths: it answers each prompt from the
    prompt alone (never from its batch), as a task and the driver both construct it."""

    def __init__(self, model_dir: Any = None, adapter_dir: Any = None, threads: int = 1):
        pass

    @staticmethod
    def _h(prompt: list[dict[str, str]]) -> int:
        return int(hashlib.sha256(json.dumps(prompt).encode()).hexdigest()[:8], 16)

    def generate(self, prompts: list, max_new_tokens: int, batch_size: int, progress: Any = None,
                 label: str = "generate") -> list[str]:
        return [self._answer(p) for p in prompts]

    def _answer(self, prompt: list[dict[str, str]]) -> str:
        h, text = self._h(prompt), prompt[-1]["content"]
        if prompt[0]["content"] == EXTRACT_SYSTEM:
            words = text.split("Transcript:\n", 1)[1].split("\n\nWrite up to", 1)[0].split()
            if h % 3 == 0:
                return "NONE"
            answer = " ".join(w for w in words[-12:] if ":" not in w)
            return (f"Q: How does the support desk handle case {h % 7}?\nA: {answer}\n\n"
                    f"Q: What else should a customer know here?\nA: {' '.join(words[-6:])}")
        if prompt[0]["content"] == REWRITE_SYSTEM:
            reply = text.split("Agent's reply to rewrite:\n", 1)[1]
            reply = reply.rsplit("\n\nWrite only the rewritten reply.", 1)[0]
            return "" if h % 4 == 0 else f"Hello, {reply}"
        if text == WHY:
            return f"Reason {h % 5}."
        return f"My own answer {h % 11}."  # preferences: the model's answer to the prompt

    def choice_logprobs(self, prompts: list, choices: Any, batch_size: int = 8,
                        **_: Any) -> list[list[float]]:
        out = []
        for p in prompts:
            h = self._h(p)
            weights = [1.0 + ((h >> (4 * k)) % 13) for k in range(5)]
            total = sum(weights)
            out.append([math.log(w / total) for w in weights])
        return out
