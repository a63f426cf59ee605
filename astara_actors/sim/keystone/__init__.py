"""The simulated Keystone v3: projects, users with roles, password tokens, over HTTP."""
