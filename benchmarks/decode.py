"""Decoding speed and quality, side by side on one model, one beam width and one set of queries:

1. our batched trie-constrained beam search (``genrec.model.beam_search``) against ``transformers``'
   ``generate(num_beams=..., prefix_allowed_tokens_fn=...)`` over a Python dict trie: are our top-K SIDs
   identical to (or better than) generate's, and how many queries per second does each decode;
2. our constrained search against our unconstrained search: the cost of the constraint, and how many
   unconstrained SIDs name no product.

``--random-model`` runs today on a small random LlamaForCausalLM and random SIDs; ``--run RUN`` uses a
trained decoder (RUN/decoder) and its index (RUN/index). Queries are histories of random catalog products
(``--queries``, lengths 1..``--history``, left-padded), spelled ``<bos> item item ...``. Times are the
sums over batches of the fastest of ``--repeats`` interleaved runs of each batch, so other work on the
machine disturbs them less.

    PYTHONPATH=. .venv/bin/python benchmarks/decode.py --random-model
    PYTHONPATH=. .venv/bin/python benchmarks/decode.py --run runs/beauty --beam 10 --k 10

3. ``--paths`` (with ``--run``): the whole retrieval path through ``Retriever`` at batch ``--batch``. Where
   the run ranks with the learned ranker: the rank stage (decode, sources, features, ranker, stock and
   cold-start slots) against the weighted path it replaces (the beam of 50 re-scored by the co-purchase
   memory), with the rank stage's parts timed apart. Where the run has an item head: the beam of 50
   re-scored by the head against the beam alone (the head reads the decoding pass's prompt state, so the
   two should run at about the same speed). Histories are random catalog products.

    PYTHONPATH=. .venv/bin/python benchmarks/decode.py --run runs/beauty --paths --batch 64 --threads 1
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from genrec.model.beam_search import constrained_beam_search
from genrec.run.layout import HEAD_FILE, RANKER_FILE
from index.retailer_index import RetailerIndex
from index.trie import PrefixTrie

PAD, BOS, N_SPECIAL = 0, 1, 5  # the SID tokenizer's layout: <pad> <bos> <eos> <sep> <unk>, then codewords

ITEM = "ours, item-level decoder, constrained"
Decoded = tuple[torch.Tensor, torch.Tensor, float]  # rows [Q, K, D], log-probs [Q, K], seconds
Decoder = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # one batch -> rows, log-probs


@dataclass
class Setup:
    """What both decoders share."""

    model: PreTrainedModel
    rows: np.ndarray  # [n_items, L+1] token rows of the catalog
    description: str
    item_model: PreTrainedModel | None = None  # random mode: an item-level decoder over the same SIDs


def random_setup(args: argparse.Namespace) -> Setup:
    """A random Llama over the SID vocabulary and random SIDs (dedup token where codes collide)."""
    rng = np.random.default_rng(args.seed)
    levels, size = args.levels, args.codebook
    codes = rng.integers(0, size, (args.items, levels))
    codes = codes[np.lexsort(codes.T[::-1])]
    first = np.r_[True, (codes[1:] != codes[:-1]).any(axis=1)]
    idx = np.arange(len(codes))
    dedup = idx - np.maximum.accumulate(np.where(first, idx, 0))
    offsets = N_SPECIAL + np.arange(levels + 1) * size
    rows = np.concatenate([codes, dedup[:, None]], axis=1) + offsets
    vocab = N_SPECIAL + levels * size + int(dedup.max()) + 1
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=args.d_model, intermediate_size=4 * args.d_model,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=2 + (args.history + 1) * (levels + 1), pad_token_id=PAD, bos_token_id=BOS,
        eos_token_id=None,
    )
    model = LlamaForCausalLM(cfg).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    desc = (f"random Llama d={args.d_model} layers={args.layers} heads={args.heads} ({params:.1f}M params), "
            f"vocab {vocab}; {len(rows):,} random SIDs of {levels}x{size} codes + dedup token")
    item = None
    if args.item_layers:
        from genrec.model.decoder import DecoderConfig, build_decoder

        icfg = DecoderConfig(arch="item", d_model=args.d_model, n_layers=args.item_layers, n_heads=2,
                             d_ff=2 * args.d_model, depth_layers=2, max_items=args.history)
        item = build_decoder(icfg, vocab, levels + 1, PAD, BOS, None, [*offsets.tolist(), vocab]).eval()
        iparams = sum(p.numel() for p in item.parameters()) / 1e6
        desc += (f"\nrandom item-level decoder d={args.d_model}, {args.item_layers} item layers + 2 depth layers "
                 f"({iparams:.1f}M params)")
    return Setup(model, rows, desc, item)


def run_setup(args: argparse.Namespace) -> Setup:
    """The trained decoder and the index of run ``--run``."""
    from genrec.model.decoder import load_decoder
    from genrec.run.layout import decoder_model

    run = Path(args.run)
    index = RetailerIndex.load(run / "index")
    model = load_decoder(decoder_model(run), codebook_version=index.codebook_version)
    leaves = index.trie_for(None).leaf_rows.numpy()
    return Setup(model, leaves, f"run {run}: decoder {type(model).__name__}, {len(index):,} products")


def make_queries(rows: np.ndarray, n: int, history: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` left-padded prompts ``<bos> + 1..history random items``."""
    rng = np.random.default_rng(seed + 1)
    width = rows.shape[1]
    lengths = rng.integers(1, history + 1, n)
    total = 1 + history * width
    ids = np.full((n, total), PAD, np.int64)
    attn = np.zeros((n, total), np.int64)
    for q, m in enumerate(lengths):
        seq = np.r_[BOS, rows[rng.integers(0, len(rows), m)].reshape(-1)]
        ids[q, total - seq.size :] = seq
        attn[q, total - seq.size :] = 1
    return torch.from_numpy(ids), torch.from_numpy(attn)


def batches(ids: torch.Tensor, attn: torch.Tensor, size: int):
    """Consecutive batches, without the columns that are padding for the whole batch."""
    for b in range(0, ids.shape[0], size):
        x, m = ids[b : b + size], attn[b : b + size]
        keep = m.bool().any(0)
        yield x[:, keep], m[:, keep]


def ours(setup: Setup, trie: PrefixTrie, args, constrained: bool, shared_prompt: bool = True,
         model: PreTrainedModel | None = None) -> Decoder:
    """Our beam search, as a batch decoder (of ``model``, default the token-level one)."""
    def decode(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return constrained_beam_search(model or setup.model, x, m, trie, args.beam, args.k,
                                       constrained=constrained, shared_prompt=shared_prompt)
    return decode


def dict_trie(rows: np.ndarray) -> dict:
    """The usual Python trie: nested dicts keyed by token id."""
    root: dict = {}
    for row in rows.tolist():
        node = root
        for t in row:
            node = node.setdefault(t, {})
    return root


def hf_generate(setup: Setup, trie: dict, args) -> Decoder:
    """``transformers``' beam search constrained by ``prefix_allowed_tokens_fn`` over a dict trie."""
    depth = setup.rows.shape[1]

    def decode(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prompt_len = x.shape[1]

        def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
            node = trie
            for t in sent[prompt_len:].tolist():
                node = node.get(t, {})
            return list(node)

        with torch.no_grad():
            out = setup.model.generate(
                input_ids=x, attention_mask=m, num_beams=args.beam, num_return_sequences=args.k,
                max_new_tokens=depth, min_new_tokens=depth, do_sample=False, length_penalty=0.0,
                early_stopping=True, prefix_allowed_tokens_fn=allowed, output_scores=True,
                return_dict_in_generate=True, pad_token_id=PAD, eos_token_id=None,
            )
        rows = out.sequences[:, prompt_len:].reshape(x.shape[0], args.k, depth)
        return rows, out.sequences_scores.reshape(x.shape[0], args.k)

    return decode


def timed(decoders: dict[str, Decoder], ids, attn, args, repeats: int) -> dict[str, Decoded]:
    """Every decoder on every batch, ``repeats`` times in turn; per batch the fastest time counts (the
    least disturbed by other work on the machine), summed over batches."""
    outputs: dict[str, list] = {name: [] for name in decoders}
    seconds = dict.fromkeys(decoders, 0.0)
    for x, m in batches(ids, attn, args.batch):
        best = dict.fromkeys(decoders, float("inf"))
        for _ in range(repeats):
            last = {}
            for name, decode in decoders.items():
                start = time.perf_counter()
                last[name] = decode(x, m)
                best[name] = min(best[name], time.perf_counter() - start)
        for name in decoders:
            outputs[name].append(last[name])
            seconds[name] += best[name]
    return {
        name: (torch.cat([r for r, _ in out]), torch.cat([s for _, s in out]), seconds[name])
        for name, out in outputs.items()
    }


def compare(ours_rows, ours_scores, ref_rows, ref_scores, tol: float = 1e-4) -> dict:
    """Per query: identical top-K rows; ours at least as good at every rank (log-probs within ``tol``)."""
    same = (ours_rows == ref_rows).all(-1).all(-1)
    not_worse = (ours_scores >= ref_scores - tol).all(-1)
    return {"identical": same.float().mean().item(), "not_worse": not_worse.float().mean().item(),
            "gap": (ours_scores - ref_scores).abs().max().item()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run", help="a trained run folder (decoder/ and index/)")
    mode.add_argument("--random-model", action="store_true", help="small random Llama and random SIDs")
    p.add_argument("--queries", type=int, default=256, help="queries for our decoder")
    p.add_argument("--hf-queries", type=int, default=64, help="of those, how many generate() also decodes")
    p.add_argument("--batch", type=int, default=32, help="queries per batch (both decoders)")
    p.add_argument("--beam", type=int, default=10, help="beam width")
    p.add_argument("--k", type=int, default=10, help="SIDs returned per query")
    p.add_argument("--history", type=int, default=20, help="most items in a query's history")
    p.add_argument("--items", type=int, default=12101, help="random mode: catalog size (Beauty's)")
    p.add_argument("--levels", type=int, default=4, help="random mode: SID levels")
    p.add_argument("--codebook", type=int, default=256, help="random mode: codewords per level")
    p.add_argument("--d-model", type=int, default=128, help="random mode: hidden size")
    p.add_argument("--layers", type=int, default=4, help="random mode: transformer blocks")
    p.add_argument("--heads", type=int, default=4, help="random mode: attention heads")
    p.add_argument("--item-layers", type=int, default=2,
                   help="random mode: also time an item-level decoder with this many item layers (0: off)")
    p.add_argument("--repeats", type=int, default=3, help="timing runs of ours per batch (the fastest counts)")
    p.add_argument("--hf-repeats", type=int, default=1, help="timing runs of generate per batch (the fastest counts)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paths", action="store_true", help="with --run: time the whole retrieval paths instead")
    return p.parse_args(argv)


def retrieval_paths(args: argparse.Namespace) -> dict:
    """Queries/s of the retrieval paths one run has: the learned rank stage against the weighted beam-50 +
    memory path (with the rank stage's seconds by part), and, where the run has an item head, the beam of 50
    re-scored by the head against the beam alone (fastest of ``--repeats`` per batch, summed)."""
    from genrec.retriever import Retriever

    run = Path(args.run)
    plain = Retriever.from_run(run, ranker="weighted", beam_width=50, memory_weight=0, head_weight=0)
    steps, learned = {}, None
    if (run / RANKER_FILE).is_file():
        learned = Retriever.from_run(run, ranker="learned")
        weighted = Retriever.from_run(run, ranker="weighted", beam_width=50,
                                      memory_weight=learned.memory.cfg.weight or 4.0)
        steps["weighted: beam 50 + co-purchase memory"] = lambda h: weighted.retrieve_arrays(h, None, args.k)
        steps["rank stage: whole path"] = lambda h: learned.retrieve_arrays(h, None, args.k)
        steps["  decode + sources + features"] = lambda h: learned.candidate_set(h, [None] * len(h), args.k)
    if (run / HEAD_FILE).is_file():  # the head reads the prompt state of the decoding pass: no second pass
        head = Retriever.from_run(run, ranker="weighted", beam_width=50, memory_weight=0, head_weight=1.0)
        steps["weighted: beam 50 + item head"] = lambda h: head.retrieve_arrays(h, None, args.k)
        steps["weighted: beam 50 alone"] = lambda h: plain.retrieve_arrays(h, None, args.k)
    if not steps:
        raise SystemExit(f"--paths: {run} has neither a learned ranker ({RANKER_FILE}) nor an item head ({HEAD_FILE})")
    rng = np.random.default_rng(args.seed)
    catalog = plain.item_tokens.item_ids
    histories = [catalog[rng.integers(0, catalog.size, rng.integers(1, args.history + 1))] for _ in range(args.queries)]
    seconds = dict.fromkeys([*steps, *(["  ranker"] if learned else [])], 0.0)
    for start in range(0, len(histories), args.batch):
        batch = [plain.known_parts([h])[0] for h in histories[start:start + args.batch]]
        best = dict.fromkeys(seconds, float("inf"))
        for _ in range(args.repeats):
            outs = {}
            for name, step in steps.items():
                t0 = time.perf_counter()
                outs[name] = step(batch)
                best[name] = min(best[name], time.perf_counter() - t0)
            if learned:
                t0 = time.perf_counter()
                learned.ranker.score(outs["  decode + sources + features"][0])
                best["  ranker"] = min(best["  ranker"], time.perf_counter() - t0)
        for name in seconds:
            seconds[name] += best[name]
    print(f"run {run}: {len(catalog):,} products; {args.queries} queries, histories of 1..{args.history}, "
          f"K {args.k}, batch {args.batch}, threads {torch.get_num_threads()}")
    print(f"\n{'path':<42}{'seconds':>10}{'queries/s':>11}")
    qps = {name: args.queries / sec for name, sec in seconds.items()}
    for name, sec in seconds.items():
        print(f"{name:<42}{sec:>10.2f}{qps[name]:>11.1f}")
    ratios = {}
    if learned:
        ratios["rank/weighted"] = qps["rank stage: whole path"] / qps["weighted: beam 50 + co-purchase memory"]
        print(f"\nrank stage / weighted path: {ratios['rank/weighted']:.2f}x queries/s (bar: >= 0.8x)")
    if "weighted: beam 50 + item head" in qps:
        ratios["head/beam"] = qps["weighted: beam 50 + item head"] / qps["weighted: beam 50 alone"]
        print(f"item head / beam alone: {ratios['head/beam']:.2f}x queries/s (one prompt pass: about 1x)")
    return {"qps": qps, "seconds": seconds, "ratio": ratios.get("rank/weighted"), "ratios": ratios}


def run(argv: list[str] | None = None) -> dict:
    """The benchmark (printing its table), returning its measures: queries/s per decoder and, against
    generate on the first ``--hf-queries`` queries, the shares of queries with identical top-K lists
    (``identical``) and with ours at least as good at every rank (``not_worse``), the largest log-prob gap,
    and the share identical with and without the shared-prompt tree (``tree_identical``)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.paths:
        if not args.run:
            raise SystemExit("--paths needs --run RUN")
        return retrieval_paths(args)
    setup = run_setup(args) if args.run else random_setup(args)
    setup.model.to(args.device)
    if setup.item_model is not None:
        setup.item_model.to(args.device)
    trie = PrefixTrie(setup.rows, vocab_size=setup.model.config.vocab_size)
    ids, attn = make_queries(setup.rows, args.queries, args.history, args.seed)
    ids, attn = ids.to(args.device), attn.to(args.device)
    n_hf = min(args.hf_queries, args.queries)
    print(setup.description)
    print(f"{args.queries} queries (generate: the first {n_hf}), histories of 1..{args.history} items, "
          f"beam {args.beam}, K {args.k}, batch {args.batch}, device {args.device}, threads {torch.get_num_threads()}")

    ours(setup, trie, args, True)(*next(batches(ids, attn, args.batch)))  # warm-up
    decoders = {
        "ours, trie-constrained": ours(setup, trie, args, True),
        "ours, unconstrained": ours(setup, trie, args, False),
        "ours, constrained, cache row per beam": ours(setup, trie, args, True, shared_prompt=False),
    }
    if setup.item_model is not None:
        decoders[ITEM] = ours(setup, trie, args, True, model=setup.item_model)
    got = timed(decoders, ids, attn, args, args.repeats)
    hf = {"transformers generate + dict-trie fn": hf_generate(setup, dict_trie(setup.rows), args)}
    got |= timed(hf, ids[:n_hf], attn[:n_hf], args, args.hf_repeats)

    depth = setup.rows.shape[1]
    print(f"\n{'decoder':<42}{'queries':>9}{'seconds':>10}{'queries/s':>11}{'invalid IDs':>13}")
    qps = {}
    for name, (rows, _, sec) in got.items():
        n = rows.shape[0]
        qps[name] = n / sec
        invalid = 1 - trie.contains(rows.reshape(-1, depth).cpu()).float().mean().item()
        print(f"{name:<42}{n:>9}{sec:>10.2f}{qps[name]:>11.1f}{invalid:>13.2%}")

    con, unc = got["ours, trie-constrained"], got["ours, unconstrained"]
    hf = got["transformers generate + dict-trie fn"]
    ratio = qps["ours, trie-constrained"] / qps["transformers generate + dict-trie fn"]
    overhead = con[2] / unc[2] - 1
    cmp = compare(con[0][:n_hf].cpu(), con[1][:n_hf].cpu(), hf[0].cpu(), hf[1].cpu())
    tree_same = (con[0] == got["ours, constrained, cache row per beam"][0]).all(-1).all(-1).float().mean().item()
    print(f"\nspeed-up over generate: {ratio:.1f}x (bar: >= 10x)")
    print(f"constraint overhead vs unconstrained: {overhead:+.1%} (bar: < 10%)")
    print(f"top-{args.k} vs generate on {n_hf} queries: identical {cmp['identical']:.1%}, ours at least as good "
          f"at every rank {cmp['not_worse']:.1%}, max |log-prob gap| {cmp['gap']:.1e}")
    print(f"top-{args.k} with vs without the shared-prompt tree: identical {tree_same:.1%}")
    if ITEM in qps:
        print(f"item-level decoder vs token-level, both trie-constrained: "
              f"{qps[ITEM] / qps['ours, trie-constrained']:.1f}x queries/s (bar: >= 3x)")
    return {"qps": qps, "speedup": ratio, "constraint_overhead": overhead, **cmp, "tree_identical": tree_same}


def main(argv: list[str] | None = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
