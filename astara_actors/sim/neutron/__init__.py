"""The simulated Neutron v2.0: networks, subnets, ports, routers, floating IPs, over HTTP."""
