"""The simulator's load driver keeps the fleet's size while it churns."""

from __future__ import annotations

import random

from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.load import LoadDriver
from astara_actors.sim.settings import SimSettings


def test_churn_keeps_the_fleet_at_its_size() -> None:
    cloud = SimCloud(SimSettings(port=0, tenants=2, routers_per_tenant=5), rng=random.Random(7))
    cloud.bootstrap()
    try:
        driver = LoadDriver(cloud)
        sizes = []
        for _ in range(400):
            driver.counts[driver.step()] += 1
            sizes.append(len(cloud.topology))
        assert driver.fleet == 10
        assert min(sizes) >= 9 and max(sizes) <= 11, "a random walk would drift by tens"
        assert abs(driver.counts["create"] - driver.counts["delete"]) <= 1
        assert driver.counts["create"] > 50 and driver.counts["update"] > 100  # still churning
    finally:
        cloud.stop()
