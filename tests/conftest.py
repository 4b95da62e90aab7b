"""Test-session reporting: tests that could not run because the non-free benchmark sets are absent are
listed at the end, so a green run on a machine without them never hides what it did not check."""

from test_data import NONFREE_DATA_MISSING


def pytest_terminal_summary(terminalreporter):
    missing = [report for report in terminalreporter.stats.get("skipped", [])
               if NONFREE_DATA_MISSING in str(report.longrepr)]
    if missing:
        terminalreporter.section("non-free benchmark data", sep="!", yellow=True, bold=True)
        terminalreporter.write_line(
            f"{len(missing)} tests did NOT run: AIME, AMC and Minerva Math are not shipped (not freely "
            "licensed). Set TRIM_DATA_DIR to a folder holding them (see tests/test_data.py); CI runs with "
            "TRIM_REQUIRE_NONFREE_DATA=1, where these tests fail instead.", yellow=True, bold=True)
