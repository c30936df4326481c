"""The config tables in docs/ are generated from the config classes and may not drift."""

from __future__ import annotations

from tools import config_docs

# Every entry point's config class (platform.train's three tracks; sweep and compare reuse them).
ENTRY_CONFIGS = {
    "platform.allocation.config:AllocationConfig",
    "platform.clinical.config:ClinicalConfig",
    "platform.tabular:TabularConfig",
}


def test_every_entry_point_config_has_a_table():
    documented = {t for targets in config_docs.tables().values() for t in targets}
    assert ENTRY_CONFIGS <= documented, ENTRY_CONFIGS - documented


def test_tables_are_current():
    stale = {str(p): config_docs.refresh(p.read_text())[1] for p in config_docs.documents()}
    stale = {p: s for p, s in stale.items() if s}
    assert not stale, f"stale config tables (python -m tools.config_docs --write): {stale}"


def test_a_drifted_table_is_caught():
    target = "platform.clinical.config:ClinicalConfig"
    body = config_docs.render(target)
    drifted = body.replace("\n", "\n| `gone.field` | int | `1` | removed long ago |\n", 1)
    text = f"# doc\n<!-- config-table: {target} -->\n{drifted}<!-- /config-table -->\n"
    new, stale = config_docs.refresh(text)
    assert stale == [target] and "gone.field" not in new and body in new
