"""The README's tables of models, datasets, losses and experiments are what conf/ holds."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_conf():
    generator = load_generator()
    readme = (ROOT / "README.md").read_text()
    assert generator.readme_with_tables(readme) == readme, "run: python scripts/readme_tables.py --write"
    for group in ("model", "data", "loss", "experiment"):
        for path in (ROOT / "conf" / group).glob("*.yaml"):
            if not path.name.startswith("_"):
                assert f"`{group}={path.stem}`" in readme, path
                assert generator.describe(path), f"{path} needs an opening comment that says what it is"
