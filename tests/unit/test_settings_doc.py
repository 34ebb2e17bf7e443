"""docs/settings.md lists every setting of shared/settings.py, as scripts/settings_doc.py writes it."""

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
