"""The processor with the real offline tokenizer (all-MiniLM-L6-v2): dialogue text -> chunks of token ids."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from raytune_bsm.data.processor import ChunkProcessor, ProcessorConfig, split_messages
from raytune_bsm.errors import ConfigError
from raytune_bsm.pretrained import load_tokenizer

CLS, SEP = 101, 102
# Words the MiniLM vocabulary holds as one token each, so "cat cat cat" is exactly 3 tokens and every
# message can be told apart after decoding: message i is WORDS[i] repeated.
WORDS = ["cat", "dog", "sun", "car", "red", "box", "pen", "cup", "hat", "map", "bus", "egg", "fox", "ice", "jam"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("all-MiniLM-L6-v2")


def make(tok, **kw) -> ChunkProcessor:
    return ChunkProcessor(ProcessorConfig(**kw), tokenizer=tok)


def message(i: int, n: int) -> str:
    return " ".join([WORDS[i]] * n)


def chunks_of(p, r: int = 0) -> list[list[int]]:
    """Record r of a Processed -> its chunks (special tokens included)."""
    ids, lens = p.ids[r].tolist(), p.lens[r].tolist()
    out, start = [], 0
    for n in lens:
        out.append(ids[start : start + n])
        start += n
    assert start == len(ids)
    return out


def test_words_are_single_tokens(tok):
    rust = make(tok)._rust
    for w in WORDS:
        assert len(rust.encode(w, add_special_tokens=False).ids) == 1, w
    assert len(rust.encode(message(0, 7), add_special_tokens=False).ids) == 7


def test_string_and_list_dialogues_give_the_same_chunks(tok):
    proc = make(tok, max_chunks=8, max_tokens=16)
    msgs = [message(0, 5), message(1, 9), message(2, 3), message(3, 20), message(4, 1)]
    as_string = "\n".join(msgs)
    with_blanks = "\n\n  " + "\n \n".join(msgs) + "\n"  # blank lines and padding whitespace are not messages
    as_list = list(msgs)
    with_nones = [None, msgs[0], "", *msgs[1:], "   "]
    p = proc([as_string, with_blanks, as_list, with_nones])
    ref = chunks_of(p, 0)
    assert len(ref) >= 3
    for r in (1, 2, 3):
        assert chunks_of(p, r) == ref
        assert p.lens[r].tolist() == p.lens[0].tolist()
    assert split_messages(as_string) == msgs == split_messages(as_list) == split_messages(with_nones)


def test_whole_messages_are_packed_and_only_overlong_messages_are_split(tok):
    T = 16
    budget = T - 2  # [CLS] and [SEP] are part of T
    proc = make(tok, max_chunks=64, max_tokens=T)
    # message i: WORDS[i] repeated n_i times. 14 fits a chunk exactly; 20 and 33 are longer than a chunk.
    lengths = [5, 6, 4, 10, 14, 3, 20, 2, 7, 33, 1, 13, 9]
    msgs = [message(i, n) for i, n in enumerate(lengths)]
    p = proc(["\n".join(msgs)])
    chunks = chunks_of(p)
    assert p.truncated == 0
    assert p.tokens == sum(lengths)

    for c in chunks:
        assert len(c) <= T
        assert c[0] == CLS and c[-1] == SEP
        assert CLS not in c[1:-1] and SEP not in c[1:-1]
    # Nothing lost, nothing reordered.
    content = [c[1:-1] for c in chunks]
    flat = [t for c in content for t in c]
    assert tok.decode(flat).split() == " ".join(msgs).split()

    # Decode every chunk and find which messages it holds (message i is the only one using WORDS[i]).
    chunk_words = [tok.decode(c).split() for c in content]
    holders = {i: [k for k, ws in enumerate(chunk_words) if WORDS[i] in ws] for i in range(len(msgs))}
    for i, n in enumerate(lengths):
        if n <= budget:
            assert len(holders[i]) == 1, f"message {i} ({n} tokens) was split across chunks {holders[i]}"
            assert chunk_words[holders[i][0]].count(WORDS[i]) == n
        else:  # split into full pieces: exactly ceil(n / budget) chunks hold it
            assert len(holders[i]) == -(-n // budget)
            pieces = [chunk_words[k].count(WORDS[i]) for k in holders[i]]
            assert pieces[:-1] == [budget] * (len(pieces) - 1) and sum(pieces) == n
    # Chunk boundaries fall on message boundaries, except inside the two overlong messages.
    boundaries = np.cumsum([0] + lengths).tolist()
    cuts = np.cumsum([len(c) for c in content]).tolist()
    inside = [b for b in cuts if b not in boundaries]
    expected_inside = [
        b + k * budget for b, n in zip(boundaries, lengths) if n > budget for k in range(1, -(-n // budget))
    ]
    assert inside == expected_inside == [56, 85, 99]
    # Packing is greedy: a chunk is closed only when the next message did not fit in it.
    for k in range(len(content) - 1):
        start = cuts[k]
        if start in boundaries:
            nxt = lengths[boundaries.index(start)]
            assert len(content[k]) + nxt > budget, f"chunk {k} had room for the next message"
    # The exact expected layout, as chunk content lengths.
    # The long message starts a fresh chunk; the message after it joins its last piece (6 + 2, then 5 + 1).
    assert [len(c) for c in content] == [11, 14, 14, 3, 14, 6 + 2, 7, 14, 14, 5 + 1, 13, 9]


def test_keep_first_or_last_chunks_and_count_truncated(tok):
    # Ten messages of 14 tokens: each fills a 16-token chunk exactly, so the dialogue is 10 chunks.
    long = "\n".join(message(i, 14) for i in range(10))
    short = "\n".join(message(i, 3) for i in range(3))  # 9 tokens: one chunk
    dialogues = [long, short, long, [message(0, 1)]]
    first = make(tok, max_chunks=3, max_tokens=16, keep_chunks="first")(dialogues)
    last = make(tok, max_chunks=3, max_tokens=16, keep_chunks="last")(dialogues)
    everything = make(tok, max_chunks=10, max_tokens=16)(dialogues)

    assert len(chunks_of(everything, 0)) == 10 and everything.truncated == 0
    assert first.truncated == 2 and last.truncated == 2
    assert [len(l) for l in first.lens] == [3, 1, 3, 1] == [len(l) for l in last.lens]
    kept_words = lambda p: [tok.decode(c[1:-1]).split()[0] for c in chunks_of(p, 0)]  # noqa: E731
    assert kept_words(first) == WORDS[0:3]
    assert kept_words(last) == WORDS[7:10]
    assert chunks_of(first, 0) == chunks_of(everything, 0)[:3]
    assert chunks_of(last, 0) == chunks_of(everything, 0)[-3:]
    assert chunks_of(first, 1) == chunks_of(last, 1) == chunks_of(everything, 1)
    # `tokens` counts what the tokenizer produced, before chunks were dropped.
    assert first.tokens == last.tokens == everything.tokens == 140 + 9 + 140 + 1


def test_empty_and_none_dialogues_give_no_chunks(tok):
    p = make(tok, max_chunks=4, max_tokens=16)([None, "", "  \n\n \t", [], [None, "", " "], "cat"])
    assert [len(l) for l in p.lens] == [0, 0, 0, 0, 0, 1]
    assert [len(i) for i in p.ids] == [0, 0, 0, 0, 0, 3]
    assert p.ids[0].dtype == np.int32 and p.lens[0].dtype == np.int32
    assert p.truncated == 0 and p.tokens == 1


def test_very_long_single_message(tok):
    T, C = 16, 4
    n = T * C * 3  # 192 tokens in one message, three times what C chunks hold
    text = message(0, n)
    last = make(tok, max_chunks=C, max_tokens=T, keep_chunks="last")([text])
    first = make(tok, max_chunks=C, max_tokens=T, keep_chunks="first")([text])
    assert last.truncated == first.truncated == 1
    assert last.tokens == first.tokens == n
    assert first.lens[0].tolist() == [T] * C
    # 192 = 13 full pieces of 14 + 10: the last piece is the short one.
    assert last.lens[0].tolist() == [T, T, T, n - 13 * (T - 2) + 2]
    for p in (first, last):
        for c in chunks_of(p):
            assert c[0] == CLS and c[-1] == SEP and set(c[1:-1]) == {tok.convert_tokens_to_ids(WORDS[0])}


def test_tokenizer_padding_and_truncation_settings_are_ignored(tok):
    # Regression: the default model's tokenizer.json pads and truncates everything to 128 tokens.
    backend = tok.backend_tokenizer
    assert backend.truncation is not None and backend.truncation["max_length"] == 128
    assert backend.padding is not None and backend.padding["length"] == 128
    proc = make(tok, max_chunks=2, max_tokens=512)
    p = proc([message(0, 300), message(1, 2)])
    assert p.lens[0].tolist() == [302]  # not cut to 128
    assert p.lens[1].tolist() == [4]  # not padded to 128
    assert p.ids[1].tolist() == [CLS, tok.convert_tokens_to_ids("dog"), tok.convert_tokens_to_ids("dog"), SEP]
    assert p.tokens == 302

    # A tokenizer with other padding/truncation turned on gives exactly the same chunks.
    odd = copy.deepcopy(tok)
    odd.backend_tokenizer.enable_truncation(max_length=5)
    odd.backend_tokenizer.enable_padding(length=40, pad_id=0, pad_token="[PAD]")
    q = ChunkProcessor(ProcessorConfig(max_chunks=2, max_tokens=512), tokenizer=odd)([message(0, 300), message(1, 2)])
    assert [a.tolist() for a in q.ids] == [a.tolist() for a in p.ids]
    assert [a.tolist() for a in q.lens] == [a.tolist() for a in p.lens]


def test_batching_does_not_change_the_result(tok):
    proc = make(tok, max_chunks=3, max_tokens=16)
    rng = np.random.default_rng(0)
    dialogues = [
        "\n".join(message(int(rng.integers(len(WORDS))), int(rng.integers(1, 30))) for _ in range(rng.integers(0, 6)))
        for _ in range(25)
    ]
    whole = proc(dialogues)
    small = proc(iter(dialogues), batch_size=4)  # any iterable; batches of 4 records
    assert len(small.ids) == len(whole.ids) == 25
    assert all(np.array_equal(a, b) for a, b in zip(small.ids, whole.ids))
    assert all(np.array_equal(a, b) for a, b in zip(small.lens, whole.lens))
    assert (small.truncated, small.tokens) == (whole.truncated, whole.tokens)
    assert whole.truncated > 0
    assert all(int(l.sum()) == len(i) for i, l in zip(whole.ids, whole.lens))


def test_settings_describe_the_processor(tok):
    s = make(tok, max_chunks=5, max_tokens=32, keep_chunks="first").settings()
    assert s == {
        "tokenizer": "all-MiniLM-L6-v2",
        "max_chunks": 5,
        "max_tokens": 32,
        "keep_chunks": "first",
        "pack_from": "start",
        "pad_id": 0,
        "prefix": [CLS],
        "suffix": [SEP],
    }


def packed_whole_from_the_end(p: ChunkProcessor, dialogue: str) -> list[list[int]]:
    """The reference for pack_from=kept_end, keep_chunks=last: every message tokenized, messages and tokens
    reversed, greedy packing, everything turned back, the last max_chunks chunks kept."""
    msgs = [p._rust.encode(m, add_special_tokens=False).ids for m in split_messages(dialogue)]
    chunks = [c[::-1] for c in reversed(p._pack([m[::-1] for m in reversed(msgs)]))]
    return [p.prefix + c + p.suffix for c in chunks[-p.config.max_chunks :]]


def test_packing_from_the_kept_end_fills_the_kept_chunks_and_tokenizes_only_their_text(tok):
    # Twelve messages of 10 tokens, one of 30 (longer than a chunk: split), in chunks of 14 content tokens.
    msgs = [message(i % len(WORDS), 10) for i in range(12)] + [message(3, 30)]
    dialogue = "\n".join(msgs)
    last = make(tok, max_chunks=3, max_tokens=16, pack_from="kept_end")
    got = last([dialogue, "cat", msgs[0]])
    assert chunks_of(got, 0) == packed_whole_from_the_end(last, dialogue)
    # from the end: the 30-token message fills two chunks whole (14 + 14), its first 2 tokens start the next one
    assert got.lens[0].tolist() == [2 + 10 + 2, 16, 16] and got.cut[0] and got.truncated == 1
    assert chunks_of(got, 1) == [[CLS, tok.convert_tokens_to_ids("cat"), SEP]] and not got.cut[1]
    # only the messages that reach the kept chunks were tokenized: 30 + 10 + 10 words overflow 3 x 14 tokens
    assert got.tokens == 30 + 10 + 10 + 1 + 10
    # keep first: the same as packing from the start, tokenizing the first messages only
    first = make(tok, max_chunks=3, max_tokens=16, keep_chunks="first", pack_from="kept_end")([dialogue])
    start = make(tok, max_chunks=3, max_tokens=16, keep_chunks="first")([dialogue])
    assert chunks_of(first) == chunks_of(start) and first.cut == start.cut and first.tokens < start.tokens


def test_packing_from_the_kept_end_tokenizes_a_record_whole_when_words_undercount_its_tokens(tok):
    # Words that are fewer than their tokens never stop tokenizing early; a "word" of characters the normalizer
    # drops (a zero-width format character) is no token at all: the record is tokenized whole, chunks exact.
    p = make(tok, max_chunks=2, max_tokens=8, pack_from="kept_end")
    ghost = " ".join(["\u200b"] * 20)  # 20 words, 0 tokens
    dialogue = "\n".join([message(0, 5), message(1, 5), ghost, ghost])
    got = p([dialogue])
    assert chunks_of(got) == packed_whole_from_the_end(p, dialogue) and got.tokens == 10


def test_a_run_packs_from_the_start_unless_it_asks_for_the_kept_end():
    from raytune_bsm.config import RunConfig, resolve_model_config

    run = RunConfig.from_dict({})
    assert ProcessorConfig.of_model(run.model_config()).pack_from == "start"  # issue 18.28: AUROC 0.95, not 0.89
    asked = RunConfig.from_dict({"model": {"pack_from": "kept_end"}})
    assert ProcessorConfig.of_model(asked.model_config()).pack_from == "kept_end"
    old = {k: v for k, v in run.model_config().items() if k != "pack_from"}  # a checkpoint's hparams before it
    assert ProcessorConfig.of_model(old).pack_from == "start"
    assert resolve_model_config(old, reference=False)["pack_from"] == "start"


@pytest.mark.parametrize(
    "kw, flag, value",
    [
        (dict(max_chunks=0), "--max-chunks", "0"),
        (dict(max_chunks=5000), "--max-chunks", "5000"),
        (dict(max_tokens=4), "--max-tokens", "4"),
        (dict(max_tokens=10000), "--max-tokens", "10000"),
        (dict(keep_chunks="middle"), "keep_chunks", "'middle'"),
    ],
)
def test_config_errors_name_the_flag(kw, flag, value):
    with pytest.raises(ConfigError) as e:
        ProcessorConfig(**kw)
    assert flag in str(e.value) and str(e.value).endswith(value)


def test_smallest_max_tokens_still_works(tok):
    p = make(tok, max_chunks=2, max_tokens=8)([message(0, 6) + "\n" + message(1, 1)])
    assert p.lens[0].tolist() == [8, 3]


def test_a_resumed_run_chunks_as_it_did_when_it_started():
    from raytune_bsm.config import RunConfig
    from raytune_bsm.runner.train import as_started

    run = RunConfig.from_dict({})
    before = {k: v for k, v in run.model_config().items() if k != "pack_from"}  # bsm_config.json of an older run
    assert as_started(run, {"model": before}).model_config()["pack_from"] == "start"
    kept_end = {**run.model_config(), "pack_from": "kept_end"}  # started while kept_end was a run's default
    assert as_started(run, {"model": kept_end}).model_config()["pack_from"] == "kept_end"
    assert as_started(run, {"model": run.model_config()}).model_config()["pack_from"] == "start"
