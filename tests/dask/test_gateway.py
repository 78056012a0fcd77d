"""dask-gateway clusters in project sandboxes: isolation, membership, limits, stop."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root


async def test_cluster_reads_its_project_data(gateway):
    g = gateway.connect("alice")
    cluster = await g.new_cluster(project="cardio-los")
    try:
        await cluster.scale(1)
        client = await cluster.get_client(set_as_default=False)
        await client.wait_for_workers(1, timeout=60)

        def probe():
            import os
            return sorted(os.listdir("/data")), os.getuid()

        dirs, uid = await client.submit(probe)
        assert dirs == ["omop"]
        assert uid == 20001
        await client.close()
    finally:
        await cluster.shutdown()
