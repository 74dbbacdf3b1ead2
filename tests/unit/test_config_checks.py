"""Config values are checked where a config is made: a bad value of any section fails at load with one line
naming the file and ``section.key``; the CLI prints that line and exits 2; renamed keys keep their old
spellings readable (old run folders), and giving both spellings is an error."""
from __future__ import annotations

import argparse
import pickle

import pytest
import yaml

import genrec
from genrec.carousel import CarouselConfig
from genrec.cli import main
from genrec.data.synth import SynthConfig
from genrec.evaluation.protocol import EvalConfig
from genrec.rank.item_head import ItemHeadConfig
from genrec.model.train import TrainConfig
from genrec.run.config import RunConfig, load_run_config
from genrec.serve.settings import ServeSettings
from semid.config import (Checks, ConfigError, add_flags, field_help, from_dict, from_flags, renamed_keys, save_yaml,
                          to_dict)
from semid.train import SemIDConfig

# (section, a bad setting) for every section of a run config; the error must name section and key
BAD_RUN_VALUES = [
    (None, {"name": ""}),
    ("embedding", {"provider": "sbert"}),
    ("embedding", {"column": None, "provider": "column"}),  # the provider needs the column named
    ("embedding", {"collab_weight": 1.0}),
    ("semid", {"contrastive_every": 0}),
    ("semid", {"codebook_sizes": [32, 0, 8]}),
    ("semid", {"codebook_sizes": []}),
    ("semid", {"min_lr_ratio": 1.5}),
    ("semid", {"method": "kmeans"}),
    ("sequence", {"train_stride": 0}),
    ("sequence", {"split": "random"}),
    ("decoder", {"n_heads": 3}),  # does not divide d_model 128
    ("decoder", {"dropout": 1.0}),
    ("train", {"epochs": 0}),
    ("train", {"min_lr_ratio": -0.1}),
    ("train", {"ema_decay": 1.0}),
    ("train", {"eval_examples": 0}),
    ("cold_start", {"share": 1.0}),
    ("memory", {"floor": 0.0}),
    ("memory", {"beam_width": 0}),
    ("item_head", {"beam_width": 0}),
]


@pytest.mark.parametrize("section, bad", BAD_RUN_VALUES, ids=lambda v: str(v))
def test_a_bad_value_of_every_section_fails_at_load_naming_file_and_key(tmp_path, section, bad):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({section: bad} if section else bad))
    with pytest.raises(ConfigError) as caught:
        load_run_config(path)
    e, key = caught.value, next(iter(bad))
    assert (e.file, e.section, e.key) == (str(path), section, key)
    assert str(e).startswith(f"{path}: {section + '.' if section else ''}{key}: ") and "\n" not in str(e)


@pytest.mark.parametrize("make, section, key", [
    (lambda: SynthConfig(orders_min=9, orders_max=3), "synth", "orders_min"),
    (lambda: SynthConfig(items=0), "synth", "items"),
    (lambda: ServeSettings(port=70000), "serve", "port"),
    (lambda: ServeSettings(dtype="float16"), "serve", "dtype"),
    (lambda: CarouselConfig(on_missing="ignore"), "carousel", "on_missing"),
    (lambda: CarouselConfig(threads=-1), "carousel", "threads"),
    (lambda: EvalConfig(tune_metric="mrr@10"), "eval", "tune_metric"),
    (lambda: EvalConfig(cold_share=1.0), "eval", "cold_share"),
    (lambda: ItemHeadConfig(dropout=1.0), "item_head", "dropout"),
    (lambda: SemIDConfig(hidden_dims=[256, 0]), "semid", "hidden_dims"),
    (lambda: TrainConfig(batch_size=0), "train", "batch_size"),
])
def test_sections_made_from_flags_or_code_are_checked_too(make, section, key):
    with pytest.raises(ConfigError) as caught:
        make()
    assert (caught.value.section, caught.value.key) == (section, key)
    assert str(caught.value).startswith(f"{section}.{key}: ")


@pytest.mark.parametrize("text, section, key, message", [
    ("train:\n  epoch: 3\n", "train", "epoch", "unknown key (did you mean 'epochs'?)"),
    ("trian:\n  epochs: 3\n", None, "trian", "unknown key (did you mean 'train'?)"),
    ("semid:\n  codebook_sizes: [8, x]\n", "semid", "codebook_sizes[1]", "expected int"),
    ("train: [1\n", None, None, "not valid YAML"),
])
def test_unknown_keys_wrong_types_and_broken_files_are_config_errors(tmp_path, text, section, key, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_run_config(path)
    e = caught.value
    assert (e.file, e.section, e.key) == (str(path), section, key)
    assert str(e).startswith(": ".join(p for p in (str(path), e.where, message) if p)) and "\n" not in str(e)


def test_the_error_is_exported_lightly_and_survives_pickling():
    assert genrec.ConfigError is ConfigError and issubclass(ConfigError, ValueError)
    e = pickle.loads(pickle.dumps(ConfigError("must be >= 1, got 0", "train", "epochs", "a.yaml")))
    assert str(e) == "a.yaml: train.epochs: must be >= 1, got 0"
    assert (e.section, e.key, e.file) == ("train", "epochs", "a.yaml")


def test_checks_let_unset_options_pass_and_refuse_non_numbers():
    class Cfg:
        limit, flag, text = None, True, "x"

    Checks(Cfg(), "s").at_least(1, "limit").within(0, 1, "limit")
    for key in ("flag", "text"):
        with pytest.raises(ConfigError, match=rf"s\.{key}: expected a number"):
            Checks(Cfg(), "s").at_least(0, key)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("semid:\n  contrastive_every: 0\n")
    code = main(["semid", "train", "--data", str(tmp_path / "data"), "--config", str(path),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "run").exists()
    assert err == f"genrec: config error: {path}: semid.contrastive_every: must be >= 1, got 0\n"
    code = main(["carousel", "--run", str(tmp_path), "--requests", "r.parquet", "--out", "o.parquet", "--k", "0"])
    assert code == 2 and capsys.readouterr().err == "genrec: config error: carousel.k: must be >= 1, got 0\n"


def _old_run_config(tmp_path, **extra_train):
    """A run folder's config.yaml as the code before the renames wrote it (every field, old spellings)."""
    tree = to_dict(RunConfig())
    tree["train"]["max_epochs"], tree["train"]["num_threads"] = 7, 1
    del tree["train"]["epochs"], tree["train"]["threads"]
    tree["semid"]["lr_min_ratio"] = 0.2
    del tree["semid"]["min_lr_ratio"]
    tree["train"].update(extra_train)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_old_spellings_load_as_the_new_keys(tmp_path):
    cfg = load_run_config(_old_run_config(tmp_path))
    assert (cfg.train.epochs, cfg.train.threads, cfg.semid.min_lr_ratio) == (7, 1, 0.2)
    save_yaml(cfg, tmp_path / "again.yaml")  # saved again: the new spellings only
    assert load_run_config(tmp_path / "again.yaml") == cfg
    assert "max_epochs" not in (tmp_path / "again.yaml").read_text()
    # a codebook.json of an old run stores its SemIDConfig under "config"
    assert from_dict(SemIDConfig, {"lr_min_ratio": 0.3}, "config").min_lr_ratio == 0.3
    assert renamed_keys(TrainConfig, {"max_epochs": 2, "lr": 0.1}) == {"epochs": 2, "lr": 0.1}


def test_both_spellings_are_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.yaml: train\.max_epochs: old spelling of 'epochs', which is given "
                                          r"too") as caught:
        load_run_config(_old_run_config(tmp_path, epochs=7))
    assert (caught.value.section, caught.value.key) == ("train", "max_epochs")
    with pytest.raises(ConfigError, match=r"semid\.lr_min_ratio: old spelling of 'min_lr_ratio'"):
        from_dict(RunConfig, {"semid": {"lr_min_ratio": 0.1, "min_lr_ratio": 0.1}})


def test_flags_mirror_a_config_dataclass():
    """A command's flags come from its config's fields: defaults, types, Literal choices, --x / --no-x, help from
    the field comment, renamed flags that keep the field's name."""
    parser, only = argparse.ArgumentParser(), ("k", "on_missing", "device", "progress")
    add_flags(parser, CarouselConfig, only)
    assert from_flags(CarouselConfig, parser.parse_args([]), only) == CarouselConfig()
    args = parser.parse_args(["--k", "7", "--on-missing", "error", "--device", "cpu", "--no-progress"])
    assert from_flags(CarouselConfig, args, only, threads=2) == CarouselConfig(
        k=7, on_missing="error", device="cpu", progress=False, threads=2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--on-missing", "ignore"])
    assert field_help(CarouselConfig)["k"] == "products per request"
    assert field_help(TrainConfig)["ema_decay"].startswith("exponential moving average")  # the comment above
    assert field_help(ServeSettings)["port"] == "TCP port"  # metadata
    parser = argparse.ArgumentParser()
    add_flags(parser, EvalConfig, ("cold_start_fraction", "beam_width"),
              names={"cold_start_fraction": "--cold-start", "beam_width": "--beam"})
    args = parser.parse_args(["--cold-start", "0.1", "--beam", "5"])
    assert (args.cold_start_fraction, args.beam_width) == (0.1, 5)
