"""The simulated Nova v2.1, or only the appliance agents beside a real Nova."""
