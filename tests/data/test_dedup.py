"""Tests for the dedup stage: exact and MinHash-LSH near duplicates on support conversations."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash

from engine.config import DedupSpec
from engine.data.minhash import NearIndex, Signer, lsh_params, sides
from engine.data.stages.dedup import Deduper, dedup, minhash_signatures
from engine.records import Conversation, Reject, SourceRef
from tests.data.fixtures.dedup.support_pairs import near_dup_pairs, short_pairs, templated_pairs
from tests.helpers import ROOT

Msgs = list[dict[str, str]]


def conv(cid: str, *turns: tuple[str, str], line: int = 1) -> Conversation:
    return Conversation(id=cid, messages=[{"role": r, "content": c} for r, c in turns],
                        source=SourceRef("t.jsonl", line, cid.upper()))


def of(cid: str, messages: Msgs, line: int = 1) -> Conversation:
    return Conversation(id=cid, messages=messages, source=SourceRef("t.jsonl", line, cid))


def dropped_share(pairs: list[tuple[Msgs, Msgs]], spec: DedupSpec) -> float:
    """Share of pairs whose second conversation dedup drops (each pair on its own)."""
    dropped = 0
    for a, b in pairs:
        out = list(dedup([of("a", a), of("b", b)], spec))
        assert isinstance(out[0], Conversation)
        dropped += isinstance(out[1], Reject)
    return dropped / len(pairs)


# ------------------------------------------------------------------------------ exact
def test_exact_first_survives_and_clusters_are_recorded() -> None:
    a = conv("a", ("user", "Where is my order?"), ("assistant", "It ships today."), line=1)
    b = conv("b", ("user", "other question"), ("assistant", "other answer"), line=2)
    a2 = conv("a2", ("user", "where IS my  order?"), ("assistant", "It ships\ntoday."), line=3)
    a3 = conv("a3", ("user", "Where is my order?"), ("assistant", "It ships today."), line=4)
    swapped = conv("s", ("assistant", "Where is my order?"), ("user", "It ships today."), line=5)
    clusters: dict[str, list[str]] = {}
    out = list(dedup([a, b, a2, a3, swapped], DedupSpec(), clusters))
    assert [x.id for x in out if isinstance(x, Conversation)] == ["a", "b", "s"]  # roles matter
    rejects = [x for x in out if isinstance(x, Reject)]
    assert [(r.record_id, r.stage, r.reason, r.detail, r.source.line) for r in rejects] == [
        ("a2", "dedup", "exact_duplicate", "duplicate of a", 3),
        ("a3", "dedup", "exact_duplicate", "duplicate of a", 4),
    ]
    assert clusters == {"a": ["a2", "a3"]}
    assert len(list(dedup([a, a3], DedupSpec(exact=False, near=False)))) == 2


# ------------------------------------------------------------------------------ near
def test_near_duplicate_recall_on_resent_tickets() -> None:
    pairs = near_dup_pairs(400, seed=11)
    by_kind: dict[str, list[tuple[Msgs, Msgs]]] = {}
    for a, b, kind in pairs:
        by_kind.setdefault(kind, []).append((a, b))
    spec = DedupSpec()
    assert dropped_share([(a, b) for a, b, _ in pairs], spec) >= 0.95
    for kind, group in by_kind.items():  # every kind of edit, not just the easy ones
        assert dropped_share(group, spec) >= 0.9, kind
    near, _ = short_pairs()  # one-liners: new order number, "thanks", greeting, typo
    assert dropped_share(near, spec) == 1.0


def test_distinct_conversations_with_the_same_templated_reply_survive() -> None:
    pairs = templated_pairs(400, seed=12)
    assert all(sides(a)[1] == sides(b)[1] for a, b in pairs)  # the same agent turns (but numbers)
    assert dropped_share(pairs, DedupSpec()) <= 0.02
    _, distinct = short_pairs()
    assert dropped_share(distinct, DedupSpec()) == 0.0
    # without weighting the customer's words the templated reply wins: the weight is needed
    assert dropped_share(pairs, DedupSpec(user_weight=1)) > 0.1


def test_near_reject_names_the_survivor_and_clusters_hold_both_kinds() -> None:
    (a, b, _), = near_dup_pairs(1, seed=3)
    other, _ = templated_pairs(1, seed=4)[0]
    stream = [of("s1", a, 1), of("x", other, 2), of("e1", json.loads(json.dumps(a)), 3),
              of("n1", b, 4)]
    clusters: dict[str, list[str]] = {}
    out = list(dedup(stream, DedupSpec(), clusters))
    assert [x.id for x in out if isinstance(x, Conversation)] == ["s1", "x"]
    rejects = [x for x in out if isinstance(x, Reject)]
    assert [(r.record_id, r.reason, r.source.line) for r in rejects] == [
        ("e1", "exact_duplicate", 3), ("n1", "near_duplicate", 4)]
    assert re.fullmatch(r"near-duplicate of s1 \(jaccard≈(0\.[7-9]\d|1\.00)\)", rejects[1].detail)
    assert clusters == {"s1": ["e1", "n1"]}


def test_exact_and_near_switches() -> None:
    a = conv("a", ("user", "My Halo thermostat is offline again"), ("assistant", "Please restart it."))
    a2 = conv("a2", ("user", "my halo thermostat is  offline again"), ("assistant", "Please restart it."))
    a3 = conv("a3", ("user", "My Halo thermostat is offline again, thanks"),
              ("assistant", "Please restart it."))
    reasons = lambda spec: [x.reason if isinstance(x, Reject) else "kept"  # noqa: E731
                            for x in dedup([a, a2, a3], spec)]
    assert reasons(DedupSpec()) == ["kept", "exact_duplicate", "near_duplicate"]
    assert reasons(DedupSpec(near=False)) == ["kept", "exact_duplicate", "kept"]
    assert reasons(DedupSpec(exact=False)) == ["kept", "near_duplicate", "near_duplicate"]
    detail = [x for x in dedup([a, a2], DedupSpec(exact=False)) if isinstance(x, Reject)][0].detail
    assert detail == "near-duplicate of a (jaccard≈1.00)"
    assert reasons(DedupSpec(exact=False, near=False)) == ["kept", "kept", "kept"]


def test_placeholders_and_numbers_fold_but_roles_stay_apart() -> None:
    user, agent = sides([{"role": "system", "content": "You are the triage desk."},
                         {"role": "user", "content": "Mail  <EMAIL_3>  about ORDER #482913"},
                         {"role": "assistant", "content": "Done, ticket 77."}])
    assert (user, agent) == ("mail <email_0> about order #0", "done, ticket 0.")
    signer = Signer(num_perm=128, shingle=5, user_weight=3)
    one = signer.update("where is my order", "").hashvalues.copy()
    assert not np.array_equal(one, signer.update("", "where is my order").hashvalues)
    assert np.array_equal(one, signer.update("where is my order", "").hashvalues)


def test_lsh_candidates_are_verified_so_lsh_false_positives_survive() -> None:
    signer = Signer(num_perm=128, shingle=5, user_weight=3)
    candidates_below_threshold = 0
    for a, b in templated_pairs(200, seed=13):
        index = NearIndex(128, 0.7)
        index.add(signer.update(*sides(a)))
        m = signer.update(*sides(b))
        if index.lsh.query(m):  # LSH says "maybe" ...
            estimate = LeanMinHash(seed=m.seed, hashvalues=index.row(0),
                                   scheme=m.scheme).jaccard(m)
            if estimate < 0.7:
                candidates_below_threshold += 1
                assert index.best(m) is None  # ... the Jaccard estimate says no
    assert candidates_below_threshold >= 5


def test_best_reports_the_minhash_jaccard_estimate() -> None:
    a, b, _ = near_dup_pairs(1, seed=5)[0]
    signer = Signer(num_perm=128, shingle=5, user_weight=3)
    index = NearIndex(128, 0.5)
    first = MinHash(num_perm=128, seed=1, hashvalues=signer.update(*sides(a)).hashvalues.copy(),
                    scheme=signer.minhash.scheme)
    index.add(first)
    m = signer.update(*sides(b))
    assert index.best(m) == (0, first.jaccard(m))


def test_dedup_is_deterministic_and_keeps_input_order() -> None:
    stream = []
    for i, (a, b, _) in enumerate(near_dup_pairs(60, seed=21)):
        stream += [of(f"o{i}", a), of(f"c{i}", b)]
    for i, (a, b) in enumerate(templated_pairs(60, seed=22)):
        stream += [of(f"t{i}", a), of(f"u{i}", b)]
    order = np.random.RandomState(0).permutation(len(stream))
    stream = [stream[i] for i in order]

    def run() -> list[tuple[str, str, str]]:
        clusters: dict[str, list[str]] = {}
        out = [(x.id, "kept", "") if isinstance(x, Conversation) else
               (x.record_id or "", x.reason, x.detail) for x in dedup(stream, DedupSpec(), clusters)]
        return out + [(k, "cluster", ",".join(v)) for k, v in sorted(clusters.items())]

    first = run()
    assert first == run()
    assert [x[0] for x in first[:len(stream)]] == [c.id for c in stream]  # one output per input
    reasons = Counter(x[1] for x in first[:len(stream)])
    assert reasons["near_duplicate"] >= 55 and reasons["kept"] >= 120


def test_signatures_do_not_depend_on_the_process_hash_seed() -> None:
    code = ("from engine.config import DedupSpec; "
            "from engine.data.stages.dedup import minhash_signatures; "
            "print(minhash_signatures(['Where is my order #482913?'], DedupSpec())[0][:8].tolist())")
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120, check=True)
        outs.add(res.stdout.strip())
    assert len(outs) == 1
    here = minhash_signatures(["Where is my order #482913?"], DedupSpec())[0][:8].tolist()
    assert outs == {str(here)}


def test_minhash_signatures_for_benchmarks() -> None:
    spec = DedupSpec()
    a, b, _ = near_dup_pairs(1, seed=6)[0]
    convs = [of("a", a), of("b", b)]
    sigs = minhash_signatures(convs, spec)
    assert [s.shape for s in sigs] == [(128,), (128,)]
    assert sigs[0].dtype == Signer(128, 5, 3).minhash.hashvalues.dtype
    assert 0.7 <= float(np.mean(sigs[0] == sigs[1])) < 1.0
    texts = minhash_signatures(["Where is my order #1?", "where is my ORDER #2?"], spec)
    assert np.array_equal(texts[0], texts[1])


def test_lsh_params_make_pairs_at_the_threshold_candidates() -> None:
    assert lsh_params(0.7, 128) == (25, 5)
    for threshold in (0.5, 0.7, 0.8, 0.9):
        for num_perm in (64, 128, 256):
            bands, rows = lsh_params(threshold, num_perm)
            assert bands * rows <= num_perm and bands >= 2
            assert 1 - (1 - threshold ** rows) ** bands >= 0.985


def test_index_stays_compact_and_holds_no_text() -> None:
    rng = np.random.RandomState(30)
    vocab = sorted({w for a, b in templated_pairs(50, seed=31) for m in a + b
                    for w in m["content"].split()})
    deduper = Deduper(DedupSpec())
    for i in range(2000):  # distinct conversations of ~500 characters from support vocabulary
        words = lambda n: " ".join(rng.choice(vocab, n))  # noqa: E731
        deduper.push(of(f"r{i}", [{"role": "user", "content": words(30)},
                                  {"role": "assistant", "content": words(50)}]))
    index = deduper.index
    assert index is not None and index.count == 2000
    per_record = index.nbytes() / index.count
    assert per_record < 3500  # 512 B of signature + 25 band entries; datasketch's default ~8 KB
    held = [t._d for t in index.lsh.hashtables]  # type: ignore[attr-defined]
    assert all(isinstance(k, int) for d in held for k in list(d)[:50])
    assert all(isinstance(v, (int, list)) for d in held for v in list(d.values())[:50])


@pytest.mark.parametrize("bad", [dict(threshold=0.0), dict(num_perm=8), dict(user_weight=0)])
def test_spec_bounds(bad: dict) -> None:
    with pytest.raises(ValueError):
        DedupSpec(**bad)
