"""docs/settings.md lists every setting of shared/settings.py, as scripts/settings_doc.py writes it."""

import copy
import runpy

from shared.settings import REPO_ROOT, Settings


def test_every_setting_is_documented():
    text = (REPO_ROOT / "docs" / "settings.md").read_text()
    missing = [name for name in Settings.model_fields if f"| `{name}` |" not in text]
    assert not missing, f"not in docs/settings.md: {missing}; run scripts/settings_doc.py"
    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]
    assert not undescribed, f"give these settings a description: {undescribed}"


def test_the_settings_page_is_up_to_date():
    render = runpy.run_path(str(REPO_ROOT / "scripts" / "settings_doc.py"))["render"]
    assert (REPO_ROOT / "docs" / "settings.md").read_text() == render(), "run scripts/settings_doc.py"


def test_a_default_beside_the_repository_renders_the_same_through_a_symlink(tmp_path):
    """../shared may be a symbolic link (a CI clone, a developer's checkout): the page must not name its target."""
    default_of = runpy.run_path(str(REPO_ROOT / "scripts" / "settings_doc.py"))["_default"]
    elsewhere = tmp_path / "elsewhere" / "shared"
    (elsewhere / "data").mkdir(parents=True)
    repo_root = tmp_path / "checkout" / "main"
    repo_root.mkdir(parents=True)
    (repo_root.parent / "shared").symlink_to(elsewhere)
    field = copy.copy(Settings.model_fields["DEFAULT_TRAIN_CSV"])
    field.default = repo_root.parent / "shared" / "data" / "preference_pairs.csv"
    assert default_of(field, repo_root) == "`../shared/data/preference_pairs.csv` (beside the repository)"
