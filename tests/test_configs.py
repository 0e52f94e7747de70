"""configs/{pnet,rnet,onet}.py, overrides and validation (mtcnn_jax.config_utils)."""

import pytest

from mtcnn_jax import cli, config_utils, settings
from mtcnn_jax.errors import UserError

REPO = config_utils.REPO


@pytest.mark.parametrize("stage", ["pnet", "rnet", "onet"])
@pytest.mark.parametrize("variant", ["", ":runlocal"])
def test_configs_load_and_validate(stage, variant):
    c = config_utils.get(f"configs/{stage}.py{variant}")
    assert c.stage == stage
    # α of the paper: P-Net and R-Net 1 / 0.5 / 0.5, O-Net 1 / 0.5 / 1.
    assert (c.alpha.det, c.alpha.box, c.alpha.landmarks) == (1.0, 0.5, 1.0 if stage == "onet" else 0.5)
    assert c.ohem_ratio == 0.7
    doc = (REPO / "configs" / f"{stage}.py").read_text()
    assert f"mtcnn-jax train --config configs/{stage}.py:runlocal --workdir" in doc


def test_overrides_apply_with_types():
    c = config_utils.get(
        "configs/pnet.py:runlocal",
        [("ohem_ratio", "1.0"), ("alpha.box", "0.25"), ("optimizer.decay_at", "(0.3,0.6)"),
         ("data.mirror", "false"), ("optimizer.schedule", "cosine"), ("alpha.det", "2")],
    )
    assert c.ohem_ratio == 1.0 and c.alpha.box == 0.25 and c.optimizer.decay_at == (0.3, 0.6)
    assert c.data.mirror is False and c.optimizer.schedule == "cosine"
    assert c.alpha.det == 2.0 and isinstance(c.alpha.det, float)


def test_split_overrides():
    ov, rest = config_utils.split_overrides(
        ["--config", "x.py", "--config.ohem_ratio=1.0", "--config.alpha.box", "0.25", "--workdir", "w"]
    )
    assert ov == [("ohem_ratio", "1.0"), ("alpha.box", "0.25")]
    assert rest == ["--config", "x.py", "--workdir", "w"]


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("ohem_ratoi", "0.5", "unknown config key 'ohem_ratoi'"),
        ("alpha.boxx", "0.5", "unknown config key 'alpha.boxx'"),
        ("ohem_ratio", "0", "config.ohem_ratio"),
        ("ohem_ratio", "1.5", "config.ohem_ratio"),
        ("alpha.landmarks", "-0.5", "config.alpha.landmarks"),
        ("alpha.box", "abc", "config.alpha.box"),
        ("optimizer.schedule", "linear", "config.optimizer.schedule"),
        ("batch.part", "-1", "config.batch.part"),
    ],
)
def test_bad_override_is_one_line_error_naming_it(key, value, needle):
    with pytest.raises(UserError) as err:
        config_utils.get("configs/pnet.py:runlocal", [(key, value)])
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_unknown_key_in_config_file(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(
        "from mtcnn_jax import config_utils\n"
        "def get_config(arg=None):\n"
        "    c = config_utils.base_config()\n"
        "    c.optimizer.learnig_rate = 0.1\n"
        "    return c\n"
    )
    with pytest.raises(UserError, match=r"unknown config key 'optimizer\.learnig_rate'"):
        config_utils.get(str(f))


def test_unknown_variant():
    with pytest.raises(UserError, match="runlokal"):
        config_utils.get("configs/pnet.py:runlokal")


def test_cli_reports_one_line(tmp_path, capsys):
    for args, needle in (
        (["--config.ohem_ratoi=0.5"], "unknown config key 'ohem_ratoi'"),
        (["--config.ohem_ratio=1.5"], "config.ohem_ratio"),
        (["--config.alpha.det=-1"], "config.alpha.det"),
    ):
        rc = cli.main(["train", "--config", "configs/pnet.py:runlocal", "--workdir", str(tmp_path / "w"), *args])
        err = capsys.readouterr().err.strip()
        assert rc == 2
        assert err.count("\n") == 0 and err.startswith("mtcnn-jax: ") and needle in err, err
    assert not (tmp_path / "w").exists()  # nothing started


# ----------------------------------------------------------------------------- typed settings


def _dotted(config, prefix=""):
    import ml_collections  # noqa: PLC0415

    keys = set()
    for k, v in config.items():
        keys.add(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            keys |= _dotted(v, f"{prefix}{k}.")
    return keys


def _fields(cls, prefix=""):
    """Dotted keys a settings class covers (``alpha`` / ``batch`` by the names losses gives them)."""
    import dataclasses  # noqa: PLC0415

    from mtcnn_jax import losses  # noqa: PLC0415

    nested = {"optimizer": settings.OptimizerSettings, "data": settings.DataSettings,
              "augment": settings.AugmentSettings}
    named = {"alpha": losses.TASKS, "batch": losses.SAMPLE_TYPES}
    keys = set()
    for f in dataclasses.fields(cls):
        keys.add(prefix + f.name)
        if cls is settings.TrainSettings and f.name in nested:
            keys |= _fields(nested[f.name], f"{prefix}{f.name}.")
        if cls is settings.TrainSettings and f.name in named:
            keys |= {f"{prefix}{f.name}.{k}" for k in named[f.name]}
    return keys


def test_settings_cover_exactly_the_schema():
    """The typed settings and the config schema cannot drift apart."""
    assert _fields(settings.TrainSettings) == _dotted(config_utils.base_config())
    from mtcnn_jax.commands import train_cascade as cmd  # noqa: PLC0415

    for variant in ("mini", "tiny", "paper"):
        c = cmd.load(f"configs/cascade.py:{variant}")
        assert _fields(settings.MiningSettings) == _dotted(c.mining), variant
        assert _fields(settings.EvalSettings) - {"root"} == _dotted(c.eval), variant  # root: the cascade's data_root
        assert _fields(settings.CascadeSettings) == set(c.keys()), variant


def test_settings_from_a_config_are_typed_frozen_and_write_the_same_json():
    import dataclasses  # noqa: PLC0415
    import json  # noqa: PLC0415

    from mtcnn_jax import files  # noqa: PLC0415

    c = config_utils.get("configs/onet.py:runlocal", [("optimizer.decay_at", "(0.3,0.6)")])
    s = settings.TrainSettings.from_config(c)
    assert isinstance(s.optimizer, settings.OptimizerSettings) and s.optimizer.decay_at == (0.3, 0.6)
    assert isinstance(s.data, settings.DataSettings) and s.data.wider_images == c.data.wider_images
    assert s.alpha == {"det": 1.0, "box": 0.5, "landmarks": 1.0} and s.batch["landmark"] == 16
    assert settings.TrainSettings.of(s) is s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1
    # config.json as the ConfigDict wrote it, key order included
    assert json.dumps(files.json_ready(s.to_dict()), indent=2) == c.to_json(indent=2)
    assert "workers" not in s.data.cut_key() and s.data.cut_key()["root"] == s.data.root
    c.ohem_ratio = 0.0
    with pytest.raises(UserError, match="config.ohem_ratio"):
        settings.TrainSettings.from_config(c)


def test_mining_settings_name_an_unknown_key():
    import ml_collections  # noqa: PLC0415

    from mtcnn_jax.commands import train_cascade as cmd  # noqa: PLC0415

    c = cmd.load("configs/cascade.py:tiny")
    m = settings.MiningSettings.from_config(c.mining)
    assert m.negatives_per_image == 20 and m.pyramid == "original"
    old = ml_collections.ConfigDict({k: v for k, v in c.mining.items() if k not in ("pyramid", "random_crops_per_face")})
    assert settings.MiningSettings.from_config(old).pyramid == "original"  # configs written before the key
    with pytest.raises(UserError, match="unknown config key 'mining.negatives'"):
        settings.MiningSettings.from_config(ml_collections.ConfigDict({**c.mining.to_dict(), "negatives": 1}))


# ----------------------------------------------------------------------------- where the data are


def test_data_root_is_the_configs_business(monkeypatch):
    monkeypatch.delenv("MTCNN_JAX_DATA", raising=False)
    assert config_utils.base_config().data.root == ""  # the library knows no layout
    shared = str(REPO.parent / "shared" / "data")
    assert config_utils.get("configs/pnet.py").data.root == shared  # beside the checkout of the config file
    from mtcnn_jax.commands import train_cascade as cmd  # noqa: PLC0415

    assert cmd.load("configs/cascade.py:tiny").data_root == shared
    monkeypatch.setenv("MTCNN_JAX_DATA", "/data/elsewhere")
    assert config_utils.base_config().data.root == "/data/elsewhere"
    for spec in ("configs/pnet.py", "configs/rnet.py:runlocal", "configs/onet.py"):
        assert config_utils.get(spec).data.root == "/data/elsewhere"
    assert cmd.load("configs/cascade.py:mini").data_root == "/data/elsewhere"
    assert config_utils.load_config("configs/sweeps/ohem.py").data.root == "/data/elsewhere"
    assert not hasattr(config_utils, "default_data_root")


def test_relative_config_paths_are_found_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_utils.get("configs/pnet.py:runlocal").stage == "pnet"
    with pytest.raises(UserError, match="config file not found: configs/nope.py"):
        config_utils.load_config("configs/nope.py")
