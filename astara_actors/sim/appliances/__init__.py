"""The simulated appliances: a REST agent and an SSH server per ACTIVE simulated VM."""
