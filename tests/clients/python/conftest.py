import pytest

import ferrytus


@pytest.fixture(autouse=True)
def _needs_a_server():
    if not ferrytus.configured():
        pytest.skip("FERRY_URL/FERRY_TOKEN/FERRY_SPACE unset: run tests/clients/run.sh")
