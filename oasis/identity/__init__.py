"""Identity: projects, users, roles and tokens (the builtin backend), and the policy the API applies."""
