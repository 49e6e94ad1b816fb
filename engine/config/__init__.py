"""engine.config: the pydantic v2 models of every YAML config, and loading with errors that name file,
line and field. The foundation layer: it imports nothing from engine but engine.errors.

One YAML per job; its `kind` says which sections it must have:
  pipeline: model, refine, train, eval (and gate)  — `studio run`
  refine:   refine                                  — `studio refine`
  train:    train (with base_model and dataset)     — `studio train`
  eval:     eval (with models and dataset)          — `studio eval`
  serve:    serve (with base_model)                 — `studio serve`
Unknown keys are errors everywhere. Relative paths resolve against the config file's folder.

Modules (each imports only those above it):
  base.py       Strict, the one base model (unknown keys are errors, defaults validated)
  languages.py  LANGUAGES, the codes the offline language detector knows
  refine.py     the `refine` section: inputs and the options of every refine stage
  train.py      the `train` section, and TRL_ARGUMENTS: which TRL / transformers argument each key sets
  serve.py      the `serve` section (kind: serve), and the vLLM options eval shares
  eval.py       the `eval` section (generation, graders, suites of tasks) and the `gate` section
  pipeline.py   StudioConfig: the top level, the `model` section and the sections each kind needs;
                PIPELINE_DATA, the methods `studio run` can train and the file each trains on
  loading.py    parse_config and load_config (YAML with file:line:field errors)
"""

from __future__ import annotations

from engine.config.base import Strict
from engine.config.eval import (EvalSpec, GateSpec, GenerationSpec, GraderMessage, GraderSpec,
                                JudgeGateSpec, LmEvalTaskSpec, SuiteSpec, TaskSpec)
from engine.config.languages import LANGUAGES
from engine.config.loading import load_config, parse_config
from engine.config.pipeline import PIPELINE_DATA, ModelSpec, StudioConfig, pipeline_train_problem
from engine.config.refine import (DEFAULT_HOUSE_STYLE, DEFAULT_JUDGE_RUBRIC, INPUT_FORMATS,
                                  RESIDUAL_SWITCHES, CsvColumns, DatatroveSpec, DecontamSpec, DedupSpec,
                                  FieldMap,
                                  InputSpec, LlmExtractQaSpec, LlmJudgeSpec, LlmPreferencesSpec,
                                  LlmRewriteSpec, LlmStagesSpec, NormalizeSpec, PiiResidualMax,
                                  PiiSpec, QualitySpec, RefineSpec, SpeakerMap, SplitSpec,
                                  TurnsSpec)
from engine.config.serve import BatchingSpec, ServeSpec, VllmSpec
from engine.config.train import (DATA_FORMATS, METHODS, NO_TRL_ARGUMENT, TRL_ARGUMENTS, GRPOSpec,
                                 LoraSpec, PreferenceSpec, QuantSpec, RewardFnSpec, TrainSpec)

__all__ = [
    # base
    "Strict",
    # refine
    "INPUT_FORMATS", "DEFAULT_JUDGE_RUBRIC", "DEFAULT_HOUSE_STYLE", "LANGUAGES",
    "CsvColumns", "SpeakerMap", "FieldMap", "InputSpec", "NormalizeSpec", "TurnsSpec", "PiiSpec",
    "PiiResidualMax", "RESIDUAL_SWITCHES",
    "QualitySpec", "DedupSpec", "DecontamSpec", "SplitSpec", "LlmJudgeSpec", "LlmRewriteSpec",
    "LlmExtractQaSpec", "LlmPreferencesSpec", "LlmStagesSpec", "DatatroveSpec", "RefineSpec",
    # train
    "METHODS", "DATA_FORMATS", "TRL_ARGUMENTS", "NO_TRL_ARGUMENT",
    "LoraSpec", "QuantSpec", "PreferenceSpec", "RewardFnSpec", "GRPOSpec", "TrainSpec",
    # serve
    "BatchingSpec", "VllmSpec", "ServeSpec",
    # eval and gate
    "GraderMessage", "GraderSpec", "GenerationSpec", "EvalSpec", "TaskSpec", "LmEvalTaskSpec", "SuiteSpec", "GateSpec",
    "JudgeGateSpec",
    # the whole config and loading
    "ModelSpec", "StudioConfig", "PIPELINE_DATA", "pipeline_train_problem", "parse_config",
    "load_config",
]
