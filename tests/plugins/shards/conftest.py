import pytest
from shard_data import write_table


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "data")
