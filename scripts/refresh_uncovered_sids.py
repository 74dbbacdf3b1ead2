"""Migration for collaborative runs built before ``embedding.collab_impute`` existed: products that appear
in no training sequence had a zero co-purchase part, which put their SIDs apart from everything the decoder
generates. This copies RUN to OUT and gives those products SIDs again from the run's own codebook, with the
co-purchase part borrowed from their text neighbours (``semid.collab.impute_from_text``), exactly as
``genrec semid assign`` now treats new products. Codebook, tokenizer and decoder are unchanged: these
products are in no training sequence, so the decoder never read or generated their SIDs. The retailer
index is rebuilt on the new SIDs.

    .venv/bin/python scripts/refresh_uncovered_sids.py RUN OUT
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genrec.data.dataset import read_dataset
from genrec.model.tokens import ItemTokens
from genrec.run.build import build_index
from genrec.run.config import load_run_config
from genrec.run.layout import CONFIG_FILE, EMBEDDINGS_FILE, TOKENIZER_FILE
from genrec.run.semids import run_collab_parts, run_dataset
from semid.collab import combine, fill_missing
from semid.embeddings import read_embeddings, write_embeddings
from semid.sids import extend_sids
from semid.store import load_codebook, read_sids, write_sids
from semid.tokenizer import SIDTokenizer


def refresh(run: Path, out: Path) -> int:
    """Copy ``run`` to ``out`` and re-assign the SIDs of products without co-purchases there; returns how many."""
    if out.exists():
        raise SystemExit(f"{out} exists; choose a new folder")
    shutil.copytree(run, out)
    cfg = load_run_config(out / CONFIG_FILE)
    if cfg.embedding.collab_weight <= 0:
        raise SystemExit(f"{run} has no co-purchase part: nothing to refresh")
    text, collab = run_collab_parts(out, cfg.embedding.collab_weight)
    ids, joined = read_embeddings(out / EMBEDDINGS_FILE)
    joined = joined.copy()
    bare = ~np.any(collab != 0, axis=1)  # the rows the build path now fills (semid.collab.fill_missing)
    filled = fill_missing(text, collab, max(cfg.embedding.collab_impute, 1))
    joined[bare] = combine(text[bare], filled[bare], cfg.embedding.collab_weight)
    model = load_codebook(out)
    sids = read_sids(out, expected_version=model.codebook_version)
    keep = sids.filter(pc.invert(pc.is_in(sids.column("item_id"), value_set=pa.array(ids[bare]))))
    write_sids(out, extend_sids(keep, ids[bare], model.encode(joined[bare])), model.codebook_version)
    write_embeddings(ids, joined, out / EMBEDDINGS_FILE)
    tok = SIDTokenizer.load(out / TOKENIZER_FILE, codebook_version=model.codebook_version)
    item_tokens = ItemTokens.from_sids(read_sids(out, expected_version=model.codebook_version), tok)
    build_index(out, read_dataset(run_dataset(out)), cfg, item_tokens, tok)
    return int(bare.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    n = refresh(args.run, args.out)
    print(f"wrote {args.out}: {n} products without co-purchases re-assigned through the cold-start path")


if __name__ == "__main__":
    main()
