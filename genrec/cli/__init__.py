"""The ``genrec`` command line. Each subcommand parses its flags and hands off to one library function;
the commands come in groups, one module each (``data``, ``sids``, ``runs``, ``surfaces``); nothing else
imports this package. Building the parser imports no torch, transformers or other heavy library (their
flags come from light config modules), and a command checks its config and flags before it imports the
model stack: ``genrec --help``, a bad flag and a bad config answer in a fraction of a second."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from genrec.cli import heap
from semid.common import DataError
from semid.config import ConfigError
from semid.progress import on_terminal


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their flags, one command group per module."""
    from genrec.cli import data, runs, sids, surfaces

    p = argparse.ArgumentParser(prog="genrec", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (and other libraries' INFO records)")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (data, sids, runs, surfaces):
        group.register(sub)
    return p


OUR_LOGGERS = ("genrec", "semid", "index")


def configure_logging(verbose: bool = False) -> None:
    """Our records (``OUR_LOGGERS``) on stderr from INFO (DEBUG when ``verbose``), other libraries' from
    WARNING (INFO when ``verbose``), faiss's loader chatter left out. Off a terminal Hugging Face's progress
    bars are off as well (ours become a few log lines there, ``semid.progress``)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if not on_terminal():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is imported
        if "transformers" in sys.modules:  # already imported (by a caller in this process): tell it directly
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``genrec`` console script; user errors print one line and exit 2 (a bad config:
    ``genrec: config error: FILE: section.key: message``)."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    heap.return_freed_memory()
    heap.arrow_system_pool()
    try:
        args.func(args)
    except ConfigError as e:
        print(f"genrec: config error: {e}", file=sys.stderr)
        return 2
    except (DataError, FileNotFoundError) as e:
        print(f"genrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genrec: interrupted", file=sys.stderr)
        return 130
    finally:
        _close_process_group()
    return 0


def _close_process_group() -> None:
    """Under ``accelerate launch``, wait for every process and tear the process group down before exit:
    a gloo group left to interpreter shutdown can abort the process ("terminate called without an active
    exception") after the work is done. A command that never loaded torch has no group to close."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
