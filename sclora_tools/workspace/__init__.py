"""The workspace: sclora.toml (schema.py, loading.py, template.py), the stages' places, identities
and states (plan.py, identity.py) and the gates (gates.py). Below the stages: nothing here runs one."""
