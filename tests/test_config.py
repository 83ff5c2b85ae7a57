import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from distill.config import CONFIG_DIR

GROUPS = ["data", "retrieval", "teacher", "student", "features", "logger", "paths"]


def options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(make_cfg, group, option):
    extra = ["data.path=/some/folder"] if (group, option) in {("data", "beir"), ("data", "msmarco")} else []
    cfg = make_cfg(f"{group}={option}", *extra)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg[group] is not None


def test_misspelt_key_fails_naming_it(make_cfg):
    with pytest.raises(ConfigCompositionException, match="retrieval.kk"):
        make_cfg("retrieval.kk=3")


def test_wrong_type_fails(make_cfg):
    with pytest.raises(ConfigCompositionException, match="retrieval.k"):
        make_cfg("retrieval.k=many")


def test_workspace_follows_data_name(make_cfg, tmp_path):
    cfg = make_cfg("data=vaswani")
    assert cfg.paths.workspace == str(tmp_path / "outputs" / "vaswani")
    assert make_cfg("paths.workspace=/x/y").paths.workspace == "/x/y"
