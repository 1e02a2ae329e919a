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
    """Every stage's rule comes from the one generated rule, which names the env."""
    text = (REPO / "Snakefile").read_text()
    assert text.count("\n    rule:\n") == 1 and 'conda: "envs/asrflow.yaml"' in text.split("\n    rule:\n")[1]
    assert text.count("\nrule ") == 1  # `rule all`, which runs nothing
