"""configs/{pnet,rnet,onet}.py, overrides and validation (mtcnn_jax.config_utils)."""

import pytest

from mtcnn_jax import cli, config_utils
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
