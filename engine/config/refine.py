"""The `refine` section: inputs and their formats, the options of every refine stage (normalize,
turns, PII, quality, dedup, decontam, split, LLM stages) and where the stages run (`executor`,
`datatrove`)."""

from __future__ import annotations

import re
from importlib.util import find_spec
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from engine.config.base import Strict
from engine.config.languages import LANGUAGES


class CsvColumns(Strict):
    id: str | None = None
    transcript: str | None = Field(default=None, description="cell with 'Customer: …' lines")
    customer: str | None = Field(default=None, description="cell with the customer's message")
    agent: str | None = Field(default=None, description="cell with the agent's reply")
    meta: list[str] = Field(default_factory=list, description="columns kept as slice keys")
    customer_name: str | None = Field(default=None, description="column with the customer's name "
                                      "(not kept; the PII stage redacts it wherever it appears)")

    @model_validator(mode="after")
    def _one_shape(self) -> "CsvColumns":
        if not self.transcript and not (self.customer and self.agent):
            raise ValueError("set either 'transcript' or both 'customer' and 'agent'")
        return self


class SpeakerMap(Strict):
    """Speaker labels (case-insensitive) → role. Ingest maps every turn through this
    (engine/data/ingest/speakers.py: also "Agent (Maria)", "Brightwave Bot", e-mail addresses and
    "@domain" entries)."""

    user: list[str] = Field(default_factory=lambda: ["customer", "client", "user", "visitor",
                                                     "caller", "guest"])
    assistant: list[str] = Field(default_factory=lambda: ["agent", "support", "assistant",
                                                          "operator", "representative", "advisor",
                                                          "technician", "staff", "helpdesk",
                                                          "service"])
    system: list[str] = Field(default_factory=lambda: ["system"])
    bot: list[str] = Field(default_factory=lambda: ["bot", "chatbot", "automated",
                                                    "virtual assistant", "auto-reply", "noreply",
                                                    "no-reply"])
    tool: list[str] = Field(default_factory=lambda: ["tool", "api", "function", "webhook"])


class FieldMap(Strict):
    """Dotted paths into nested JSON chat exports (format json_chat). Owned by ingest/json_chat.py."""

    records: str | None = Field(default=None, description="path to the list of conversations "
                                "when the file is one JSON document (none: JSONL, one per line)")
    id: str | None = None
    turns: str = "messages"
    speaker: str = "author"
    text: str = "text"
    meta: list[str] = Field(default_factory=list)
    customer_name: str | None = None


INPUT_FORMATS = ("openai_jsonl", "sharegpt", "alpaca", "csv_tickets", "json_chat", "transcript",
                 "email")


class InputSpec(Strict):
    path: str
    format: Literal["openai_jsonl", "sharegpt", "alpaca", "csv_tickets", "json_chat",
                    "transcript", "email"]
    columns: CsvColumns | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    fields: FieldMap | None = None
    speakers: SpeakerMap = Field(default_factory=SpeakerMap)

    @model_validator(mode="after")
    def _columns_for_csv(self) -> "InputSpec":
        if self.format == "csv_tickets" and self.columns is None:
            raise ValueError("format 'csv_tickets' needs a 'columns' mapping")
        if self.format == "json_chat" and self.fields is None:
            self.fields = FieldMap()
        return self


class NormalizeSpec(Strict):
    """Text normalization of every turn (stages/normalize.py)."""

    unicode_form: Literal["NFC", "NFKC"] = "NFKC"
    collapse_whitespace: bool = True
    strip_html: bool = Field(default=True, description="turns that look like HTML become their "
                             "visible text")
    fix_mojibake: bool = Field(default=True, description="repair mis-decoded UTF-8 (ftfy), e.g. "
                               "'donâ€™t' → 'don’t'")


class TurnsSpec(Strict):
    """Conversation clean-up (stages/turns.py)."""

    merge_consecutive: bool = True
    strip_signatures: bool = True
    strip_quoted: bool = True
    strip_boilerplate: bool = True
    boilerplate: list[str] = Field(default_factory=list, description="extra regexes (Python "
                                   "syntax); a line where one matches is removed")
    bot_turns: Literal["drop", "assistant"] = "drop"
    keep_tool_turns: bool = False

    @field_validator("boilerplate")
    @classmethod
    def _regexes_compile(cls, value: list[str]) -> list[str]:
        for i, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"entry {i} is not a valid regular expression ({exc})") from None
            if re.fullmatch(pattern, ""):
                raise ValueError(f"entry {i} matches the empty string, so it would match every line")
        return value


_Max = Annotated[int, Field(ge=0, strict=True)] | None
# PII type (the keys of max_residual) → the PiiSpec switch of its detector
RESIDUAL_SWITCHES = {"email": "emails", "phone": "phones", "card": "cards", "iban": "ibans",
                     "ip": "ips", "address": "addresses", "person": "names"}


class PiiResidualMax(Strict):
    """Most residual PII findings per type in the written records (pii.max_residual); null never
    fails. Defaults are resolved by PiiSpec from its switches (see _residual_defaults)."""

    email: _Max = None
    phone: _Max = None
    card: _Max = None
    iban: _Max = None
    ip: _Max = None
    address: _Max = None
    person: _Max = None


class PiiSpec(Strict):
    """PII detection and replacement (stages/pii.py) and the encrypted vault (data/vault.py)."""

    emails: bool = True
    phones: bool = Field(default=True, description="phone numbers, found and checked by "
                         "libphonenumber (with extensions)")
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB", "DE", "FR", "IN", "BR"],
        description="regions (ISO 3166 alpha-2) whose national formats are recognised, in order; "
                    "numbers written with '+' are recognised whatever the region")
    cards: bool = Field(default=True, description="13-19 digits passing the Luhn check")
    ibans: bool = Field(default=True, description="ISO 13616 length and mod-97 check")
    ips: bool = Field(default=True, description="IPv4 and IPv6; version strings kept")
    addresses: bool = Field(default=True, description="street addresses (EN, DE, FR forms)")
    names: bool = Field(default=True, description="names from hints, signatures and greetings")
    names_in_text: bool = Field(default=True, description="also names in free text, found with "
                                "the US census first- and last-name lists (needs names: true)")
    surrogates: bool = Field(default=True, description="numbered placeholders (<EMAIL_1>) that "
                             "stay consistent over the whole refine; false: plain <EMAIL>")
    vault: Literal["encrypted", "discard"] = Field(
        default="discard", description="encrypted: keep the placeholder → original mapping in "
        "an AES-GCM file next to the dataset version; discard: keep nothing")
    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, value: list[str]) -> list[str]:
        from phonenumbers import SUPPORTED_REGIONS  # lazy: keeps loading a config cheap

        if not value:
            raise ValueError("needs at least one region (e.g. [US])")
        out: list[str] = []
        for i, region in enumerate(value):
            code = region.strip().upper()
            if code not in SUPPORTED_REGIONS:
                raise ValueError(f"entry {i} ({region!r}) is not a region libphonenumber knows "
                                 "(ISO 3166 alpha-2, e.g. US, GB, DE)")
            if code not in out:
                out.append(code)
        return out

    vault_key_env: str = Field(default="STUDIO_VAULT_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                               description="environment variable holding the 32-byte vault key "
                               "(base64 or hex)")
    max_residual: PiiResidualMax = Field(
        default_factory=PiiResidualMax, description="the PII leak gate: most findings "
        "per type the residual scan of the written records may count (null: report only)")

    @model_validator(mode="after")
    def _residual_defaults(self) -> "PiiSpec":
        """A type left out of max_residual gets 0 when its detector is on (person: null), null
        when it is switched off; a value the user sets is kept, switched off or not."""
        unset = {t: None if t == "person" or not getattr(self, RESIDUAL_SWITCHES[t]) else 0
                 for t in RESIDUAL_SWITCHES if t not in self.max_residual.model_fields_set}
        if unset:
            resolved = self.max_residual.model_dump()
            resolved.update(unset)
            self.max_residual = PiiResidualMax.model_construct(**resolved)
        return self


class QualitySpec(Strict):
    """The gate every training conversation must pass (stages/quality.py)."""

    min_turns: int = Field(default=2, ge=1, description="non-system turns")
    max_turns: int = Field(default=200, ge=1, description="non-system turns")
    min_chars: int = Field(default=1, ge=0, description="characters of all non-system turns")
    max_chars: int = Field(default=100_000, ge=1, description="characters of all non-system turns")
    max_repetition: float = Field(default=0.5, gt=0.0, le=1.0, description="share of repeated "
                                  "lines / repeated word 3-grams above which a record is rejected")
    min_alpha_ratio: float = Field(default=0.25, ge=0.0, le=1.0, description="share of letters "
                                   "(in word-like tokens) below which a record is garbage")
    languages: list[str] = Field(default_factory=list, description="ISO 639-1 codes to keep; "
                                 "empty keeps every language")

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, value: list[str]) -> list[str]:
        out = []
        for i, code in enumerate(value):
            m = re.fullmatch(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{2,8})*", code.strip())
            if not m or m.group(1).lower() not in LANGUAGES:
                raise ValueError(f"entry {i} ({code!r}) is not a language code the detector knows;"
                                 " use ISO 639-1 codes such as 'en', 'de', 'fr'")
            out.append(m.group(1).lower())
        return list(dict.fromkeys(out))

    @model_validator(mode="after")
    def _ranges(self) -> "QualitySpec":
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) is above max_turns ({self.max_turns})")
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars})")
        return self


class DedupSpec(Strict):
    """Exact and near-duplicate removal (stages/dedup.py; defaults measured there)."""

    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.7, gt=0.0, le=1.0, description="estimated (user-weighted) "
                             "Jaccard at or above which a later conversation is a near-duplicate")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations")
    shingle: int = Field(default=5, ge=1, le=32, description="character shingle length")
    user_weight: int = Field(default=3, ge=1, le=16, description="how many times the customer's "
                             "shingles count against the agent's (templated replies weigh less)")


class DecontamSpec(Strict):
    """Drop train/val records that overlap the eval set (stages/decontam.py)."""

    enabled: bool = True
    ngram: int = Field(default=8, ge=3, le=50, description="word n-gram length of the overlap "
                       "check (customer turns only)")
    max_overlap: float = Field(default=0.5, gt=0.0, le=1.0, description="share of an eval item's "
                               "n-grams found in a record at or above which it is contaminated")
    near_threshold: float = Field(default=0.7, gt=0.0, le=1.0, description="MinHash Jaccard of "
                                  "the whole conversation at or above which it is contaminated")
    against: list[str] = Field(default_factory=list, description="extra eval JSONL files: OpenAI "
                               "messages lines or eval items with a 'prompt'/'input' text")


class SplitSpec(Strict):
    val_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    eval_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum(self) -> "SplitSpec":
        if self.val_fraction + self.eval_fraction >= 1.0:
            raise ValueError("val_fraction + eval_fraction must leave room for training data")
        return self


DEFAULT_JUDGE_RUBRIC = (
    "A good reply from the support agent:\n"
    "- answers the customer's actual question or solves the problem;\n"
    "- gives correct, concrete next steps (what to check, what we will do, when);\n"
    "- is polite and calm, without blaming the customer;\n"
    "- is short and clear, with no filler or copy-pasted boilerplate;\n"
    "- keeps placeholders such as <ORDER_1> or <EMAIL> as they are.\n"
    "Score 1 = useless or wrong, 2 = poor, 3 = acceptable, 4 = good, 5 = excellent."
)
DEFAULT_HOUSE_STYLE = (
    "Friendly and professional. Start by acknowledging the customer's problem in one short "
    "sentence, then give the solution as clear steps. Plain language, no jargon, no emojis. "
    "End by offering further help."
)


class LlmJudgeSpec(Strict):
    """LLM judge (stages/llm/judge.py): score each conversation 1-5 against a rubric."""

    enabled: bool = False
    rubric: str = Field(default=DEFAULT_JUDGE_RUBRIC, min_length=1)
    threshold: float = Field(default=3.0, ge=1.0, le=5.0, description="records scoring below "
                             "this are rejected (judge_below_threshold)")
    reasons: bool = Field(default=False, description="also generate a one-sentence reason per record")
    reason_max_tokens: int = Field(default=48, ge=1, le=512)


class LlmRewriteSpec(Strict):
    """Rewrite of the final assistant turn into a house style (stages/llm/rewrite.py)."""

    enabled: bool = False
    style: str = Field(default=DEFAULT_HOUSE_STYLE, min_length=1)
    min_ratio: float = Field(default=0.5, gt=0.0, description="rewrite/original length below "
                             "this keeps the original")
    max_ratio: float = Field(default=2.0, gt=0.0, description="rewrite/original length above "
                             "this keeps the original")

    @model_validator(mode="after")
    def _ratios(self) -> "LlmRewriteSpec":
        if self.min_ratio >= self.max_ratio:
            raise ValueError("min_ratio must be below max_ratio")
        return self


class LlmExtractQaSpec(Strict):
    """Standalone Q/A pairs from long transcripts (stages/llm/extract_qa.py)."""

    enabled: bool = False
    min_turns: int = Field(default=6, ge=2, description="only conversations with at least this "
                           "many non-system turns")
    max_pairs: int = Field(default=5, ge=1, le=50)
    min_grounding: float = Field(default=0.5, ge=0.0, le=1.0, description="share of an answer's "
                                 "words that must occur in the transcript")
    keep_source: bool = Field(default=True, description="keep the long transcript itself")


class LlmPreferencesSpec(Strict):
    """DPO pairs: golden answer (chosen) vs the model's own greedy answer (rejected)."""

    enabled: bool = False
    model: str | None = Field(default=None, description="model whose answers are the rejected "
                              "side (none: llm.model)")
    max_new_tokens: int | None = Field(default=None, ge=1, description="none: llm.max_new_tokens")


class LlmStagesSpec(Strict):
    """LLM-assisted stages on a local model (stages/llm/*). Owned by the llm stages."""

    model: str | None = Field(default=None, description="model store name (none: LLM stages off)")
    batch_size: int = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=256, ge=1)
    max_chars: int = Field(default=6000, ge=200, description="a transcript shown to the model is "
                           "cut to its last max_chars characters")
    judge: LlmJudgeSpec = Field(default_factory=LlmJudgeSpec)
    rewrite: LlmRewriteSpec = Field(default_factory=LlmRewriteSpec)
    extract_qa: LlmExtractQaSpec = Field(default_factory=LlmExtractQaSpec)
    preferences: LlmPreferencesSpec = Field(default_factory=LlmPreferencesSpec)

    @model_validator(mode="after")
    def _model_for_enabled(self) -> "LlmStagesSpec":
        on = [n for n in ("judge", "rewrite", "extract_qa", "preferences")
              if getattr(self, n).enabled]
        if on and not self.model and not (on == ["preferences"] and self.preferences.model):
            raise ValueError(f"llm.{on[0]} is enabled but llm.model is not set "
                             "(a model store name)")
        return self


INSTALL_DISTRIBUTED = "pip install '.[distributed]' (in a checkout; else 'expert-studio[distributed]')"


class MinhashBandsSpec(Strict):
    """refine.datatrove.minhash: datatrove's MinhashConfig banding for its dedup stages."""

    num_buckets: int | None = Field(default=None, ge=1, le=256, description="LSH bands: two "
                                    "records sharing every hash of one band are a candidate pair "
                                    "(none: the in-process index's bands for dedup.threshold and "
                                    "num_perm, 25 at the defaults)")
    hashes_per_bucket: int | None = Field(default=None, ge=1, le=64, description="MinHash values "
                                          "per band (none: the in-process index's, 5 at the "
                                          "defaults); a pair becomes a candidate with "
                                          "probability 1-(1-J^hashes)^buckets; buckets × hashes "
                                          "must not exceed dedup.num_perm")


class DatatroveSpec(Strict):
    """refine.datatrove: the datatrove executor of `refine.executor: datatrove`. Keys are named as
    datatrove's LocalPipelineExecutor / SlurmPipelineExecutor / RayPipelineExecutor name them."""

    executor: Literal["local", "slurm", "ray"] = Field(
        default="local", description="which datatrove executor runs the tasks: 'local' "
        "(LocalPipelineExecutor) or 'slurm' (chained job arrays; `studio refine` waits for them); "
        "'ray' is validated but refused when the refine starts")
    work_dir: str | None = Field(default=None, description="where the job's work directory "
                                 "refine-<key>/ goes (none: the tenant's tmp/); with slurm, a "
                                 "filesystem the nodes and the driver share")
    tasks: int = Field(default=1, ge=1, le=100_000, description="shards of the corpus, one "
                       "datatrove task each")
    workers: int = Field(default=-1, ge=-1, description="tasks running at once; -1: all of them "
                         "(datatrove's default)")
    logging_dir: str | None = Field(default=None, description="datatrove's logs, stats and "
                                    "completion markers (none: logs/ in the job's work directory)")
    skip_completed: bool = Field(default=True, description="a rerun of the same refine skips the "
                                 "tasks a killed run completed (datatrove's completion markers)")
    start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"
    dedup: Literal["datatrove", "driver"] = Field(
        default="datatrove", description="datatrove: exact and near dedup on datatrove's MinHash "
        "stages (signatures, buckets, clusters: on disk); driver: the in-process dedup, "
        "byte-identical to executor: local, its index in the driver's memory")
    minhash: MinhashBandsSpec = Field(default_factory=MinhashBandsSpec)
    decontam: Literal["datatrove", "driver"] = Field(
        default="datatrove", description="datatrove: the train/val records are checked against "
        "the eval index by datatrove tasks (the index built and pickled in shards into the work "
        "directory, each task loading one); driver: checked in the driver, as in-process")
    decontam_shard_items: int = Field(
        default=20_000, ge=1, le=10_000_000, description="eval items per shard of the "
        "decontamination index (datatrove.decontam: datatrove): the driver builds one shard at a "
        "time, and each task loads one at a time (about 10 KB per item)")
    ingest_part_mb: float = Field(
        default=256, gt=0, description="a JSON Lines input (openai_jsonl; sharegpt, alpaca, "
        "json_chat as lines) larger than this many MiB is ingested by several tasks, each a span "
        "of its lines of about this size; other inputs are one ingest task per file")
    llm: Literal["datatrove", "driver"] = Field(
        default="datatrove", description="datatrove: each LLM stage (judge, extract_qa, rewrite, "
        "preferences) is a phase of tasks, each loading the model once; driver: the stages run "
        "in the driver on one model, as in-process")
    randomize_start_duration: int = Field(default=0, ge=0, description="seconds; each task "
                                          "starts after a random delay up to this")
    # SlurmPipelineExecutor (cpus_per_task and mem_per_cpu_gb also RayPipelineExecutor)
    partition: str | None = None
    time: str | None = Field(default=None, description="Slurm time limit per task, HH:MM:SS")
    cpus_per_task: int = Field(default=1, ge=1)
    mem_per_cpu_gb: float = Field(default=2, gt=0)
    job_name: str = "studio-refine"
    qos: str = "normal"
    venv_path: str | None = Field(default=None, description="virtualenv activated on the nodes")
    sbatch_args: dict[str, str] = Field(default_factory=dict)
    llm_sbatch_args: dict[str, str] = Field(
        default_factory=dict, description="Slurm: sbatch options of the LLM phases only, over "
        "sbatch_args (for example {gres: 'gpu:1'}: a GPU per task)")

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (one per task) or at least 1")
        return value

    @model_validator(mode="after")
    def _slurm_needs(self) -> "DatatroveSpec":
        if self.executor == "slurm":
            missing = [k for k in ("partition", "time") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"executor 'slurm' needs {' and '.join(missing)}")
        return self


class RefineSpec(Strict):
    dataset: str = Field(description="name of the dataset; each refine writes a new version")
    inputs: list[InputSpec] = Field(min_length=1)
    system_prompt: str | None = Field(default=None, description="added where a conversation has none")
    normalize: NormalizeSpec = Field(default_factory=NormalizeSpec)
    turns: TurnsSpec = Field(default_factory=TurnsSpec)
    pii: PiiSpec = Field(default_factory=PiiSpec)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    dedup: DedupSpec = Field(default_factory=DedupSpec)
    decontam: DecontamSpec = Field(default_factory=DecontamSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    llm: LlmStagesSpec = Field(default_factory=LlmStagesSpec)
    workers: int = Field(default=1, ge=1, le=256, description="processes for the per-record stages")
    executor: Literal["local", "datatrove"] = Field(
        default="local", description="local: this process (and `workers`); datatrove: the "
        "per-record stages as datatrove tasks (`datatrove`), the rest here")
    datatrove: DatatroveSpec = Field(default_factory=DatatroveSpec)

    @model_validator(mode="after")
    def _workers_of_the_executor(self) -> "RefineSpec":
        if self.executor == "datatrove" and self.workers != 1:
            raise ValueError("'workers' is for executor 'local'; with executor 'datatrove' set "
                             "datatrove.workers (tasks at once) instead")
        return self

    @field_validator("executor")
    @classmethod
    def _executor_installed(cls, value: str) -> str:
        if value == "datatrove" and find_spec("datatrove") is None:
            raise ValueError("'datatrove' needs the datatrove package, which is not installed; "
                             f"install the extra: {INSTALL_DISTRIBUTED}")
        return value
