import yaml

from conftest import REPO


def pins(lines):
    return sorted(l.split("#")[0].strip() for l in lines if "==" in l.split("#")[0])


def test_conda_env_pins_match_requirements():
    req = pins((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "envs/asrflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip) == req


def test_every_rule_names_the_env():
    text = (REPO / "Snakefile").read_text()
    assert text.count('conda: "envs/asrflow.yaml"') == text.count("\nrule ") - 1  # all but `rule all`
