"""Reports each scenario's verdict to the suite script (one line per scenario in FERROMQ_RESULTS_FILE)
and prints a SCENARIO line so failures point at a behaviour."""
import os

import pytest

_reported = set()
_pass_detail = {}


@pytest.fixture
def pass_detail(request):
    """Sets the detail a scenario reports with PASS (measured figures, e.g. delivery lateness)."""
    name = request.node.name.removeprefix("test_")

    def set_detail(text):
        _pass_detail[name] = text

    return set_detail


def _record(name, verdict, detail):
    if name in _reported:
        return
    _reported.add(name)
    detail = " ".join(str(detail).split())[:300]
    line = f"python {name} {verdict} {detail}".rstrip()
    print(f"\nSCENARIO {line}", flush=True)
    path = os.environ.get("FERROMQ_RESULTS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    name = item.name.removeprefix("test_")
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        _record(name, "SKIP", reason)
    elif report.failed:
        exc = call.excinfo.value if call.excinfo else report.longrepr
        _record(name, "FAIL", f"{report.when}: {type(exc).__name__}: {exc}")
    elif report.when == "call":
        _record(name, "PASS", _pass_detail.get(name, ""))
