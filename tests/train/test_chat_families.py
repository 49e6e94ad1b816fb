"""Chat families: assistant-only loss and the template/mask gate on each family's official template.

For every family a tiny tokenizer gets the family's special tokens (bos / eos / end-of-turn / role
markers) and the family's official serving template (tests/train/chat_templates/, see its README).
Each test proves, on multi-turn conversations with and without a system message and with a
generation prompt, that the derived training template renders byte-identical text, that only the
reply tokens and each reply's end-of-turn token carry loss, and names the quirks the gate refuses.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from engine.errors import StudioError
from engine.train.family_templates import FAMILIES, apply_family
from engine.train.mask_gate import check_gate, end_of_turn_token, mask_report
from engine.train.templates import plan_template, renders_identically

TEMPLATES = Path(__file__).parent / "chat_templates"

# special tokens, eos, bos and the expected end-of-turn token of each tokenizer kind
_KINDS = {
    "llama3": (["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"], "<|end_of_text|>", "<|begin_of_text|>"),
    "qwen": (["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"], "<|im_end|>", None),
    "mistral": (["<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"], "</s>", "<s>"),
    "gemma": (["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], "<eos>", "<bos>"),
    "phi3": (["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|endoftext|>", None),
    "phi4": (["<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>"], "<|im_end|>", None),
}

# fixture → (tokenizer kind, family the engine must pick, its end-of-turn token, source)
CASES = {
    "llama3": ("llama3", "llama3", "<|eot_id|>", "TRL training template"),
    "llama3_1": ("llama3", "llama3_1", "<|eot_id|>", "studio family rule"),
    "llama3_2": ("llama3", "llama3_1", "<|eot_id|>", "studio family rule"),
    "qwen2_5": ("qwen", "qwen2_5", "<|im_end|>", "studio family rule"),
    "qwen3": ("qwen", "qwen3", "<|im_end|>", "studio family rule"),
    "mistral_v0_3": ("mistral", "mistral", "</s>", "studio family rule"),
    "mistral_nemo": ("mistral", "mistral_nemo", "</s>", "studio family rule"),
    "mistral_small": ("mistral", "mistral_small", "</s>", "studio family rule"),
    "gemma2": ("gemma", "gemma2", "<end_of_turn>", "studio family rule"),
    "gemma3": ("gemma", "gemma3", "<end_of_turn>", "studio family rule"),
    "phi3": ("phi3", "phi3", "<|end|>", "studio family rule"),
    "phi3_5": ("phi3", "phi3", "<|end|>", "studio family rule"),
    "phi4": ("phi4", "phi4", "<|im_end|>", "studio family rule"),
}

SYS = {"role": "system", "content": "You are a support agent. Be brief."}
U1 = {"role": "user", "content": "Hello, my order #1234 has not arrived."}
A1 = {"role": "assistant", "content": "I'm sorry to hear that. I can check the tracking number."}
U2 = {"role": "user", "content": "Thanks, please do."}
A2 = {"role": "assistant", "content": "It arrives tomorrow.\nAnything else?"}
NO_SYSTEM = [[U1, A1], [U1, A1, U2, A2]]
WITH_SYSTEM = [[SYS, U1, A1], [SYS, U1, A1, U2, A2]]
# families whose official template refuses a system message, or misplaces it once a reply follows
SYSTEM_REFUSED = {"gemma2": "refuses", "mistral_v0_3": "prompt", "mistral_nemo": "prompt"}


@functools.lru_cache(maxsize=None)
def _base_tokenizer_json() -> str:
    from engine.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer().backend_tokenizer.to_str()


def family_tokenizer(fixture: str):
    """The tiny BPE tokenizer with this family's special tokens, eos/bos and official template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    specials, eos, bos = _KINDS[CASES[fixture][0]]
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_base_tokenizer_json()),
                                  model_max_length=512, padding_side="right")
    named = {"eos_token": eos, "pad_token": "<|endoftext|>", **({"bos_token": bos} if bos else {})}
    tok.add_special_tokens({**named, "extra_special_tokens": [t for t in specials if t not in (eos, bos)]})
    tok.chat_template = (TEMPLATES / f"{fixture}.jinja").read_text(encoding="utf-8")
    return tok


def _assert_clean_mask(tok, template: str, conv: list[dict[str, str]], eot: str) -> None:
    """The trained tokens decode to exactly the replies, each followed by the end-of-turn token."""
    enc = tok.apply_chat_template(conv, chat_template=template, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    trained = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    text = tok.decode(trained)
    for m in conv:
        if m["role"] == "assistant":
            assert m["content"] in text
    assert text.count(eot) == sum(m["role"] == "assistant" for m in conv)
    assert text.rstrip().endswith(eot)


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_family_gets_assistant_only_loss_proven_by_the_gate(fixture: str) -> None:
    _kind, family, eot, source = CASES[fixture]
    tok = family_tokenizer(fixture)
    official = tok.chat_template
    plan = plan_template(tok, NO_SYSTEM)
    assert plan.mode == "assistant_only", plan.reason
    assert plan.family == family and source in plan.reason
    assert end_of_turn_token(tok, official) == eot
    # byte-identical to the official template, also with a system message and a generation prompt
    assert renders_identically(tok, official, plan.template, [*NO_SYSTEM, *WITH_SYSTEM])
    report = mask_report(tok, plan.template, official, NO_SYSTEM)
    check_gate(report)
    assert report["assistant_replies"] == report["replies_with_end_of_turn_trained"] == 3
    assert report["end_of_turn_token"] == eot and report["reply_tokens_untrained"] == 0
    assert report["roles"]["assistant"]["loss_share"] == 1.0
    assert all(v["trained"] == 0 for r, v in report["roles"].items() if r != "assistant")
    for conv in NO_SYSTEM:
        _assert_clean_mask(tok, plan.template, conv, eot)
    with_system = mask_report(tok, plan.template, official, WITH_SYSTEM)
    if fixture in SYSTEM_REFUSED:
        key = {"refuses": "conversations_refused_by_template",
               "prompt": "replies_with_shifted_prompt"}[SYSTEM_REFUSED[fixture]]
        assert with_system[key] > 0
        with pytest.raises(StudioError):
            check_gate(with_system)
    else:
        check_gate(with_system)
        assert with_system["roles"]["assistant"]["loss_share"] == 1.0


def test_every_family_rule_applies_only_to_its_own_templates() -> None:
    matches = {f.name: sorted(fx.stem for fx in TEMPLATES.glob("*.jinja")
                              if apply_family(fx.read_text(encoding="utf-8"), f) is not None)
               for f in FAMILIES}
    expected: dict[str, list[str]] = {}
    for fixture, (_k, family, _e, source) in CASES.items():
        if source == "studio family rule":
            expected.setdefault(family, []).append(fixture)
    assert matches == {k: sorted(v) for k, v in expected.items()}


def test_qwen3_earlier_replies_are_trained_without_the_think_block() -> None:
    """Qwen3's official template keeps an (empty) <think> block only in the final reply: the gate
    trains exactly what serving renders for the whole conversation."""
    tok = family_tokenizer("qwen3")
    plan = plan_template(tok, NO_SYSTEM)
    text = tok.apply_chat_template([U1, A1, U2, A2], chat_template=plan.template, tokenize=False)
    assert text.count("<think>") == 1 and text.index("<think>") > text.index(A1["content"])
    enc = tok.apply_chat_template([U1, A1, U2, A2], chat_template=plan.template, tokenize=True,
                                  return_dict=True, return_assistant_tokens_mask=True)
    trained = tok.decode([t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m])
    assert trained == A1["content"] + "<|im_end|><think>\n\n</think>\n\n" + A2["content"] + "<|im_end|>"


def test_trl_training_templates_that_train_template_glue_are_not_used() -> None:
    """TRL's Gemma / Phi-3 / Qwen2.5 training templates also train the newline after the
    end-of-turn token (and Phi-3's closing eos); the gate refuses them, our rule is used."""
    from engine.train.family_templates import trl_training_template

    for fixture in ("gemma2", "phi3", "qwen2_5"):
        tok = family_tokenizer(fixture)
        family, trl_template = trl_training_template(tok)
        assert family == CASES[fixture][1]
        with pytest.raises(StudioError, match="non-assistant tokens"):
            check_gate(mask_report(tok, trl_template, tok.chat_template, NO_SYSTEM))


def test_gate_refuses_marks_without_the_family_end_of_turn_token() -> None:
    tok = family_tokenizer("llama3_1")
    plan = plan_template(tok, NO_SYSTEM)
    bad = plan.template.replace("{%- generation %}{{- message['content'] | trim + '<|eot_id|>' }}{%- endgeneration %}",
                                "{%- generation %}{{- message['content'] | trim }}{%- endgeneration %}{{- '<|eot_id|>' }}")
    assert bad != plan.template
    report = mask_report(tok, bad, tok.chat_template, NO_SYSTEM)
    assert report["templates_identical"]
    with pytest.raises(StudioError, match="end-of-turn token '<\\|eot_id\\|>' is not trained in 3 of 3"):
        check_gate(report)
    # training on the eos token instead (what a gate keyed on eos would accept) is refused too
    eos_marked = bad.replace("{{- '<|eot_id|>' }}", "{%- generation %}{{- '<|eot_id|>' }}{%- endgeneration %}")
    check_gate(mask_report(tok, eos_marked, tok.chat_template, NO_SYSTEM))  # eot in the loss: fine
    assert tok.eos_token == "<|end_of_text|>" != report["end_of_turn_token"]


def test_gate_refuses_loss_on_the_role_header() -> None:
    tok = family_tokenizer("phi4")
    plan = plan_template(tok, NO_SYSTEM)
    leaky = plan.template.replace("{{'<|im_start|>assistant<|im_sep|>'}}{%- generation %}",
                                  "{%- generation %}{{'<|im_start|>assistant<|im_sep|>'}}")
    assert leaky != plan.template
    with pytest.raises(StudioError, match="non-assistant tokens: {'template'"):
        check_gate(mask_report(tok, leaky, tok.chat_template, NO_SYSTEM))


def test_override_pins_a_family_or_takes_a_marked_file(tmp_path: Path) -> None:
    tok = family_tokenizer("gemma3")
    assert plan_template(tok, NO_SYSTEM, override="gemma3").family == "gemma3"
    with pytest.raises(StudioError, match="not this family's official template") as err:
        plan_template(tok, NO_SYSTEM, override="llama3_1")
    assert err.value.where == "train.chat_template"
    with pytest.raises(StudioError, match="unknown chat family"):
        plan_template(tok, NO_SYSTEM, override="gemma9")
    marked = plan_template(tok, NO_SYSTEM).template
    good = tmp_path / "gemma3_training.jinja"
    good.write_text(marked)
    plan = plan_template(tok, NO_SYSTEM, override=str(good))
    assert plan.mode == "assistant_only" and plan.template == marked
    other = tmp_path / "other.jinja"
    other.write_text(marked.replace("<start_of_turn>model", "<start_of_turn>assistant"))
    with pytest.raises(StudioError, match="renders differently") as err:
        plan_template(tok, NO_SYSTEM, override=str(other))
    assert err.value.where == "train.chat_template"


def test_fixtures_are_recorded_with_their_source() -> None:
    readme = (TEMPLATES / "README.md").read_text()
    for fx in TEMPLATES.glob("*.jinja"):
        assert f"| {fx.name} |" in readme
    assert json.dumps(sorted(CASES)) == json.dumps(sorted(fx.stem for fx in TEMPLATES.glob("*.jinja")))


def _tiny_family_model(out: Path, fixture: str) -> Path:
    """A 1-layer, hidden-32 Llama with this family's tokenizer and official template."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = family_tokenizer(fixture)
    eot = tok.convert_tokens_to_ids(CASES[fixture][2])
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=[tok.eos_token_id, eot],
                         pad_token_id=tok.pad_token_id, dtype="float32")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id, eot],
                                               pad_token_id=tok.pad_token_id, max_new_tokens=8)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_sft_trains_a_llama3_1_family_model_on_replies_only(tmp_path: Path, workspace, registry) -> None:
    """The real SFT recipe on a Llama-3.1-template model: the family plan, the gate on the data,
    TRL training with the marks, and the adapter ships the official (serving) template."""
    from engine.config import load_config
    from engine.models.store import import_model
    from engine.train.sft import train_sft

    model_dir = _tiny_family_model(tmp_path / "llama31", "llama3_1")
    import_model(workspace, registry, str(model_dir), "tiny-llama31")
    rows = [{"messages": [U1, A1, U2, A2]}, {"messages": [SYS, U1, A1]}] * 4
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sft.yaml").write_text(
        "kind: train\ntenant: default\nseed: 1\ntrain:\n  method: sft\n  base_model: tiny-llama31\n"
        "  data: chats.jsonl\n  chat_template: llama3_1\n  max_steps: 2\n  batch_size: 4\n"
        "  max_seq_len: 256\n  lora: {r: 4, alpha: 8, target_modules: all-linear}\n")
    cfg = load_config(tmp_path / "sft.yaml")
    res = train_sft(cfg, workspace, registry)
    assert res.metrics["loss_mode"] == "assistant_only" and res.metrics["chat_family"] == "llama3_1"
    assert 0 < res.metrics["loss_token_share"] < 0.5  # replies only: not the long system block
    losses = [json.loads(l)["loss"] for l in (res.path / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(l)]
    assert len(losses) == 2 and all(l > 0 for l in losses)
    served = (res.adapter_dir / "chat_template.jinja").read_text()
    assert served == (TEMPLATES / "llama3_1.jinja").read_text()
